function mpc = mp_features
%MP_FEATURES  Six-bus test grid for gridtune (made up for the tests, not from any published case).
%   Exercises MATPOWER's semantics: bus numbers that are not 1..n, an isolated bus (type 4)
%   with a generator and a branch at it, two generators at one bus (one out of service), a
%   branch out of service, bus shunts, an off-nominal tap, a phase shifter, voltage limits,
%   a cost stated as a cubic whose cubic term is zero, and a linear cost.

mpc.version = '2';
mpc.baseMVA = 100;

%% bus data
%	bus_i	type	Pd	Qd	Gs	Bs	area	Vm	Va	baseKV	zone	Vmax	Vmin
mpc.bus = [
	10	3	0	0	0	0	1	1.02	0	230	1	1.06	0.94;
	20	2	40	10	0	0	1	1.0	0	230	1	1.06	0.94;
	30	1	90	30	2	15	1	1.0	0	115	1	1.05	0.95;
	40	1	70	20	0	-5	1	1.0	0	115	1	1.05	0.95;
	50	4	25	5	0	0	1	1.0	0	115	1	1.05	0.95;
	60	1	30	10	0	0	1	1.0	0	230	1	1.06	0.94;
];

%% generator data
%	bus	Pg	Qg	Qmax	Qmin	Vg	mBase	status	Pmax	Pmin
mpc.gen = [
	10	100	0	120	-60	1.02	100	1	200	10;
	20	60	0	80	-40	1.0	100	1	120	0;
	20	30	0	40	-20	1.0	100	0	80	0;
	40	20	0	30	-30	1.0	100	1	60	5;
	50	10	0	10	-10	1.0	100	1	20	0;
];

%% branch data
%	fbus	tbus	r	x	b	rateA	rateB	rateC	ratio	angle	status	angmin	angmax
mpc.branch = [
	10	20	0.01	0.08	0.06	150	150	150	0	0	1	-360	360;
	10	60	0.02	0.10	0.04	100	100	100	0	0	1	-360	360;
	20	60	0.02	0.10	0.04	100	100	100	0	0	0	-360	360;
	20	30	0.00	0.06	0	120	120	120	1.03	0	1	-360	360;
	60	40	0.00	0.07	0	90	90	90	0.98	-4	1	-360	360;
	30	40	0.03	0.12	0.02	80	80	80	0	0	1	-30	30;
	40	50	0.03	0.12	0.02	80	80	80	0	0	1	-360	360;
];

%% generator cost data
%	2	startup	shutdown	n	c(n-1)	...	c0
mpc.gencost = [
	2	0	0	4	0	0.02	18	100;
	2	0	0	3	0.03	22	50	0;
	2	0	0	3	0.01	20	0	0;
	2	0	0	2	35	0	0	0;
	2	0	0	3	0.01	5	0	0;
];
