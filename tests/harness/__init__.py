"""The PBX layer's in-process test harness (issue 12), shared by the PBX tests and the
feature tests:

- `clock`: `FakeLoop` (timers only, on a clock the test moves) and `ClockLoop` (a real
  asyncio loop, sockets and tasks included, whose `time()` the test moves: ring
  timeouts, hunt steps and applications' waits fire without real seconds passing);
- `stack`: `FakeStack`, the SIP stack as the transaction user sees it, recorded; it
  hands the PBX's requests to whoever listens (the simulated phones);
- `office`: `Office` (the Engine on a copy of the factory tables, a real media engine,
  the fake stack, a `ClockLoop`) and `Phone` (registers with digest, calls with SDP,
  answers 200 + SDP, rejects 486 or never answers; CANCEL, BYE and ACK both ways).

SIPp and baresip stay for interop (tests/interop); this is for a feature's rules.
"""
