// Package inpod is ambient in-pod mode: a node proxy serving every pod of
// its node from inside each pod's own network namespace.
//
// A node agent (istio-cni's role) speaks the ZDS protocol (proto/zds,
// wire-compatible with ztunnel's) over a Unix SOCK_SEQPACKET socket: the
// proxy says hello, the agent adds pods with their netns file descriptor
// (SCM_RIGHTS) and identity, keeps or deletes them, and marks the end of a
// full snapshot after a reconnect; every request is acked.
//
// For each pod the Server opens the proxy's listeners inside that pod's
// netns (outbound 15001 on loopback, inbound plaintext 15006, HBONE 15008:
// sockets created on an OS thread that entered the netns stay bound to it),
// programs the netns's redirection with package capture (outbound REDIRECT
// to 15001, inbound REDIRECT or TPROXY to 15006, SYNs only so connections
// older than the rules survive, the proxy's mark 0x539 excluded), and
// hands accepted connections to a Handler. Upstream sockets a Handler
// opens through Pod.DialContext are created in the pod's netns too and
// carry the mark, so they leave with the pod's address and are never
// captured again. Pod.DialFrom delivers inbound connections from the
// client's address (IP_TRANSPARENT), with a connmark return route for the
// pod's replies programmed next to the capture (retpath_linux.go).
// Deleting a pod removes its rules, closes its listeners and lets its open
// connections drain; the return path goes once they have.
//
// Files: handler.go (Pod, Handler, Ports), server.go (socket, sessions,
// pod table), session.go (one agent connection: hello, requests, acks,
// snapshot reconcile), pod.go (per-pod listeners, capture, drain),
// netns_*.go (running code and dialing inside a netns), retpath_linux.go
// (original-source return path), wire.go (one
// message per packet, SCM_RIGHTS), zdsclient.go (the agent's side, for
// tests and tools), forward.go (a Handler that forwards to the original
// destination).
//
// inpod may import capture and inpod/zdspb; it must not import dataplane,
// node, xds or cmd: the node proxy plugs in through Handler.
package inpod
