// Command ztunnel is meshlet's binary. It is the only place packages are
// wired together:
//
//	ztunnel run --bootstrap FILE [--delta] [--debug-headers] [--drain-time 10s] [--log-level info]
//	ztunnel demo [--config-dir DIR]
//	ztunnel version
//
// run loads the bootstrap (exit 2 on a bad file), publishes its static
// listeners and clusters, starts the upstream manager, HTTP proxy,
// listeners, admin server and, when an ADS server is configured (bootstrap
// or XDS_ADDRESS), the xDS client; SIGTERM or SIGINT drains and exits 0.
// demo runs echo backends, the embedded control plane and the same proxy
// in-process and prints what the traffic did.
package main
