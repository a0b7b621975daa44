// Package deploy holds the Kubernetes manifests for running meshlet: the
// node-mode (ambient ztunnel) DaemonSet with its RBAC in node/, and what
// sidecar injection adds to a workload in sidecar/. The Go code here is only
// their test, which decodes every document with the Kubernetes API types
// (unknown fields fail) and checks what a cluster would otherwise reject or
// silently misrun: ports, probes, security contexts, volumes and mounts,
// images, RBAC references, and the embedded bootstrap files.
//
// deploy imports nothing of meshlet's but config (to parse the bootstraps).
package deploy
