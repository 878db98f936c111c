"""The ext_proc stages (`router`, `upstream`; one object per gRPC stream) and the single-purpose
modules they call (`request`, `selection`, `outbound`, `metering`, `feedback`, `response`, `flow`,
`models_list`). No grpc imports here: `extproc.server` drives the stages."""
