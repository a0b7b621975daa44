package xds

import (
	"fmt"
	"os"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

// Node identifies this proxy to the control plane (envoy.config.core.v3.Node).
type Node struct {
	ID      string
	Cluster string
	// Metadata is sent as a google.protobuf.Struct of string values; istiod
	// reads keys such as CLUSTER_ID, NAMESPACE and LABELS from it.
	Metadata map[string]string
	Locality state.Locality
}

// metaPrefix marks the environment variables pilot-agent copies into node
// metadata; the key is the rest of the name.
const metaPrefix = "ISTIO_META_"

// hostname is replaced in tests.
var hostname = defaultHostname

var defaultHostname = os.Hostname

// NodeFromEnv builds the node the way Istio's agents do. mode is the node
// type prefix of the ID ("sidecar" or "ztunnel"; empty means "sidecar").
// POD_NAME, POD_NAMESPACE and INSTANCE_IP make the ID
// "MODE~IP~POD.NS~NS.svc.cluster.local"; missing ones fall back to the host
// name, "default" and 127.0.0.1. Every ISTIO_META_X variable becomes metadata
// key X. The node cluster is "WORKLOAD.NS" when ISTIO_META_WORKLOAD_NAME is
// set, else Istio's historical default "istio-proxy". Locality is left for
// the caller to fill.
//
// getenv is os.Getenv in production. A getenv cannot be enumerated, so the
// ISTIO_META_ names are taken from the process environment (os.Environ) and
// their values read through getenv; use NodeFromEnviron to supply the whole
// environment instead.
func NodeFromEnv(getenv func(string) string, mode string) Node {
	return nodeFromEnv(getenv, os.Environ(), mode)
}

// NodeFromEnviron is NodeFromEnv over an explicit "NAME=value" list (the form
// of os.Environ and exec.Cmd.Env).
func NodeFromEnviron(environ []string, mode string) Node {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return nodeFromEnv(func(k string) string { return env[k] }, environ, mode)
}

func nodeFromEnv(getenv func(string) string, environ []string, mode string) Node {
	if mode == "" {
		mode = "sidecar"
	}
	pod := getenv("POD_NAME")
	if pod == "" {
		if h, err := hostname(); err == nil && h != "" {
			pod = h
		} else {
			pod = "unknown"
		}
	}
	ns := getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "default"
	}
	ip := getenv("INSTANCE_IP")
	if ip == "" {
		ip = "127.0.0.1"
	}
	n := Node{
		ID:       fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", mode, ip, pod, ns, ns),
		Cluster:  "istio-proxy",
		Metadata: map[string]string{},
	}
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, metaPrefix) || len(name) == len(metaPrefix) {
			continue
		}
		// Read through getenv so the caller's view of the environment wins
		// (tests pass a map; production passes os.Getenv).
		if v := getenv(name); v != "" {
			n.Metadata[strings.TrimPrefix(name, metaPrefix)] = v
		}
	}
	if w := n.Metadata["WORKLOAD_NAME"]; w != "" {
		n.Cluster = w + "." + ns
	}
	return n
}

// proto renders the node for the first request of a stream.
func (n Node) proto() (*core.Node, error) {
	pn := &core.Node{
		Id:            n.ID,
		Cluster:       n.Cluster,
		UserAgentName: "meshlet",
	}
	if len(n.Metadata) > 0 {
		fields := make(map[string]any, len(n.Metadata))
		for k, v := range n.Metadata {
			fields[k] = v
		}
		md, err := structpb.NewStruct(fields)
		if err != nil {
			return nil, fmt.Errorf("node %q: metadata: %w", n.ID, err)
		}
		pn.Metadata = md
	}
	if n.Locality != (state.Locality{}) {
		pn.Locality = &core.Locality{
			Region:  n.Locality.Region,
			Zone:    n.Locality.Zone,
			SubZone: n.Locality.SubZone,
		}
	}
	return pn, nil
}
