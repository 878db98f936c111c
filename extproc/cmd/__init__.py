"""Composition roots: the `interlock` CLI and the processes it wires (gateway launcher, ext_proc
workers, supervisor, config reload, the rate-limit process, logging). Nothing outside this
package starts a process or imports the simulator (only `cli` does, lazily, for `simulate`)."""
