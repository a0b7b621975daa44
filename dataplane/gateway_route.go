package dataplane

import (
	"strconv"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// istioSNI is the parsed form of Istio's DNS-SRV style server name
// outbound_.PORT_.SUBSET_.HOST, which sidecars send to an AUTO_PASSTHROUGH
// gateway (the subset is empty, written "_._.", for the whole service).
type istioSNI struct {
	port   uint32
	subset string
	host   string
}

// parseIstioSNI parses sni as outbound_.PORT_.SUBSET_.HOST. Only the
// outbound direction is routed: a gateway forwards to services, and the
// inbound form names a workload's own port.
func parseIstioSNI(sni string) (istioSNI, bool) {
	rest, ok := strings.CutPrefix(sni, "outbound_.")
	if !ok {
		return istioSNI{}, false
	}
	port, rest, ok := strings.Cut(rest, "_.")
	if !ok {
		return istioSNI{}, false
	}
	subset, host, ok := strings.Cut(rest, "_.")
	if !ok || host == "" {
		return istioSNI{}, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || port[0] == '0' {
		return istioSNI{}, false
	}
	return istioSNI{port: uint32(p), subset: subset, host: host}, true
}

// clusterName is the name istiod gives the service (subset) cluster:
// outbound|PORT|SUBSET|HOST.
func (s istioSNI) clusterName() string {
	return "outbound|" + strconv.FormatUint(uint64(s.port), 10) + "|" + s.subset + "|" + s.host
}

// gatewayRoute says where a server name goes and why, for logs and tests.
type gatewayRoute struct {
	cluster string
	// how: "istio" (outbound_ form), "istio-sni-dnat" (a cluster named
	// like the SNI itself), "host" (the Hosts map) or "cluster" (a cluster
	// named like the plain server name).
	how string
}

// routeSNI picks the cluster for a ClientHello server name (lower case)
// from the current snapshot: Istio's outbound_.PORT_.SUBSET_.HOST form goes
// to outbound|PORT|SUBSET|HOST (or to a cluster literally named like the
// SNI, Istio's sni-dnat naming); a plain name goes to what hosts says
// (exact name, then "*.parent" wildcards from the most specific), else to
// a cluster of that name. ok is false for names nothing claims.
func routeSNI(sni string, snap *state.Snapshot, hosts map[string]string) (gatewayRoute, bool) {
	if sni == "" {
		return gatewayRoute{}, false
	}
	if is, ok := parseIstioSNI(sni); ok {
		if name := is.clusterName(); snap.Clusters[name] != nil {
			return gatewayRoute{cluster: name, how: "istio"}, true
		}
		if snap.Clusters[sni] != nil {
			return gatewayRoute{cluster: sni, how: "istio-sni-dnat"}, true
		}
		return gatewayRoute{}, false
	}
	if c, ok := lookupHost(sni, hosts); ok {
		// A configured name is an answer even when its cluster has not
		// arrived yet: that is counted as no cluster, not unknown SNI.
		return gatewayRoute{cluster: c, how: "host"}, true
	}
	if snap.Clusters[sni] != nil {
		return gatewayRoute{cluster: sni, how: "cluster"}, true
	}
	return gatewayRoute{}, false
}

// lookupHost finds name in hosts exactly, then as "*.suffix" for each
// parent domain, most specific first.
func lookupHost(name string, hosts map[string]string) (string, bool) {
	if len(hosts) == 0 {
		return "", false
	}
	if c, ok := hosts[name]; ok {
		return c, true
	}
	for rest := name; ; {
		_, parent, ok := strings.Cut(rest, ".")
		if !ok || parent == "" {
			return "", false
		}
		if c, ok := hosts["*."+parent]; ok {
			return c, true
		}
		rest = parent
	}
}
