function mpc = mp_angle
%MP_ANGLE  Three-bus test grid for gridtune (made up for the tests, not from any published case).
%   A cheap generator at bus 1 would serve the whole 150 MW load at bus 3; branch 1-3 allows
%   an angle difference of at most 3 degrees and no branch has a tight rating, so the angle
%   limit binds and the dear unit at bus 2 makes up the rest.

mpc.version = '2';
mpc.baseMVA = 100;

%% bus data
%	bus_i	type	Pd	Qd	Gs	Bs	area	Vm	Va	baseKV	zone	Vmax	Vmin
mpc.bus = [
	1	3	0	0	0	0	1	1.0	0	230	1	1.05	0.95;
	2	2	0	0	0	0	1	1.0	0	230	1	1.05	0.95;
	3	1	150	40	0	0	1	1.0	0	230	1	1.05	0.95;
];

%% generator data
%	bus	Pg	Qg	Qmax	Qmin	Vg	mBase	status	Pmax	Pmin
mpc.gen = [
	1	100	0	150	-150	1.0	100	1	250	0;
	2	50	0	150	-150	1.0	100	1	250	0;
];

%% branch data
%	fbus	tbus	r	x	b	rateA	rateB	rateC	ratio	angle	status	angmin	angmax
mpc.branch = [
	1	2	0.01	0.10	0.02	900	900	900	0	0	1	-360	360;
	1	3	0.01	0.10	0.02	900	900	900	0	0	1	-3	3;
	2	3	0.01	0.10	0.02	900	900	900	0	0	1	-360	360;
];

%% generator cost data
%	2	startup	shutdown	n	c(n-1)	...	c0
mpc.gencost = [
	2	0	0	3	0.01	10	0;
	2	0	0	3	0.01	50	0;
];
