function mpc = tiny4
%TINY4  Four-bus test grid for gridtune (made up for the tests, not from any published case).
%   Two voltage levels (110 kV, 20 kV) joined by two transformers. The 20/110 kV unit is
%   tapped on its low-voltage "from" bus (ratio 0.95): pandapower's from_ppc moves that tap to
%   the high-voltage winding, which gridtune's repair undoes. Costs are quadratic.

mpc.version = '2';

%% system MVA base
mpc.baseMVA = 100;

%% bus data
%	bus_i	type	Pd	Qd	Gs	Bs	area	Vm	Va	baseKV	zone	Vmax	Vmin
mpc.bus = [
	1	3	0	0	0	0	1	1.0	0	110	1	1.10	0.90;
	2	1	90	30	0	0	1	1.0	0	110	1	1.10	0.90;
	3	2	0	0	0	0	1	1.0	0	20	1	1.10	0.90;
	4	1	100	35	0	0	1	1.0	0	20	1	1.10	0.90;
];

%% generator data
%	bus	Pg	Qg	Qmax	Qmin	Vg	mBase	status	Pmax	Pmin
mpc.gen = [
	1	100	0	100	-100	1.0	100	1	250	10;
	3	90	0	100	-100	1.0	100	1	150	10;
];

%% branch data
%	fbus	tbus	r	x	b	rateA	rateB	rateC	ratio	angle	status	angmin	angmax
mpc.branch = [
	1	2	0.01	0.08	0.10	250	250	250	0	0	1	-360	360;
	3	2	0.00	0.06	0	200	200	200	0.95	0	1	-360	360;
	3	4	0.02	0.10	0.04	150	150	150	0	0	1	-360	360;
	2	4	0.00	0.07	0	200	200	200	1.05	0	1	-360	360;
];

%% generator cost data
%	2	startup	shutdown	n	c(n-1)	...	c0
mpc.gencost = [
	2	0	0	3	0.02	20	0;
	2	0	0	3	0.05	18	0;
];
