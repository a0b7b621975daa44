// Package admin serves the local admin HTTP endpoints: readiness (/ready,
// /healthz/ready), /config_dump, /listeners, /clusters and /server_info.
// It binds loopback addresses only and reads the proxy's state through
// snapshots and accessor funcs, never taking locks the data path holds.
//
// admin may import state and dataplane/upstream (to read clusters); it must
// not import dataplane, xds or config: cmd/ztunnel passes what it needs as
// funcs in Deps.
package admin
