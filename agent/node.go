package agent

import "github.com/meshlet/meshlet/xds"

// NodeFromEnv is xds.NodeFromEnv plus the metadata pilot-agent derives
// from the pod's environment rather than from ISTIO_META_ variables:
// istiod reads NAMESPACE, INSTANCE_IPS and SERVICE_ACCOUNT from a
// proxyless node as from a sidecar. An ISTIO_META_ value of the same key
// wins.
func NodeFromEnv(getenv func(string) string, nodeType string) xds.Node {
	n := xds.NodeFromEnv(getenv, nodeType)
	for key, env := range map[string]string{
		"NAMESPACE":       "POD_NAMESPACE",
		"INSTANCE_IPS":    "INSTANCE_IP",
		"SERVICE_ACCOUNT": "SERVICE_ACCOUNT",
	} {
		if v := getenv(env); v != "" && n.Metadata[key] == "" {
			n.Metadata[key] = v
		}
	}
	return n
}
