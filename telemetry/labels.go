package telemetry

import "strings"

// Workload describes the local workload for the source_* labels of
// outbound traffic and the destination_* labels of inbound traffic. Empty
// fields are reported as "unknown".
type Workload struct {
	Name, Namespace   string
	App, Version      string
	CanonicalService  string
	CanonicalRevision string
	Cluster           string // Kubernetes cluster id
	// Principal is the local SPIFFE ID.
	Principal string
	// Service is the local workload's service hostname, for
	// destination_service of inbound requests whose cluster does not name
	// one.
	Service string
}

const unknown = "unknown"

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// isInbound reports whether a listener serves inbound traffic, which makes
// this proxy the "destination" reporter. Istio's inbound listeners are
// "virtualInbound" and "inbound|..."; meshlet's own inbound ones also
// carry "inbound" in their name.
func isInbound(listener string) bool {
	for i := 0; i+7 <= len(listener); i++ {
		if strings.EqualFold(listener[i:i+7], "inbound") {
			return true
		}
	}
	return false
}

// dest is what a cluster name says about the destination.
type dest struct {
	service, name, namespace, subset string
}

// parseCluster decodes Istio's cluster names "outbound|PORT|SUBSET|HOST"
// and "inbound|PORT|SUBSET|HOST". Other names stand for themselves as the
// destination service.
func parseCluster(c string) dest {
	parts := strings.Split(c, "|")
	if len(parts) != 4 || (parts[0] != "outbound" && parts[0] != "inbound") {
		return dest{service: c, name: c}
	}
	d := parseHost(parts[3])
	d.subset = parts[2]
	return d
}

// parseHost splits a service hostname: reviews.default.svc.cluster.local
// is service name reviews in namespace default.
func parseHost(host string) dest {
	if host == "" {
		return dest{}
	}
	labels := strings.Split(host, ".")
	d := dest{service: host, name: labels[0]}
	if len(labels) >= 3 && labels[2] == "svc" {
		d.namespace = labels[1]
	}
	return d
}

// namespaceOf returns NS of spiffe://TD/ns/NS/sa/SA, or "".
func namespaceOf(principal string) string {
	_, rest, ok := strings.Cut(principal, "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}

// Istio's standard metric labels, in the order values are stored.
var istioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version", "destination_service", "destination_service_name",
	"destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
	"destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// httpLabels are istioLabels plus the response labels of request metrics.
var httpLabels = append(append([]string(nil), istioLabels...), "response_code", "grpc_response_status")

// peerLabels resolves the labels shared by HTTP and TCP series. It runs
// once per new series, never per request.
func (m *Metrics) peerLabels(listener, cluster, principal, flags, proto string, tls bool) []string {
	local := &m.cfg.Workload
	d := parseCluster(cluster)
	v := make([]string, 0, len(httpLabels))
	if isInbound(listener) {
		if d.service == "" {
			d = parseHost(local.Service)
		}
		if d.namespace == "" {
			d.namespace = local.Namespace
		}
		policy := "none"
		if principal != "" {
			policy = "mutual_tls"
		}
		v = append(v, "destination",
			unknown, orUnknown(namespaceOf(principal)), orUnknown(principal),
			unknown, unknown, unknown, unknown, unknown,
			orUnknown(local.Name), orUnknown(local.Namespace), orUnknown(local.Principal),
			orUnknown(local.App), orUnknown(local.Version), orUnknown(d.service), orUnknown(d.name),
			orUnknown(d.namespace), orUnknown(local.CanonicalService), orUnknown(local.CanonicalRevision),
			orUnknown(local.Cluster),
			proto, orDash(flags), policy)
		return v
	}
	// Outbound: the source is us; the destination is what the cluster
	// name says (Istio's subset names follow the version label, so the
	// subset stands in for destination_version: the canary view). The upstream's identity is not known here (the pool does not
	// report the server certificate), and Istio's source reporter says
	// "unknown" for the security policy.
	v = append(v, "source",
		orUnknown(local.Name), orUnknown(local.Namespace), orUnknown(local.Principal),
		orUnknown(local.App), orUnknown(local.Version), orUnknown(local.CanonicalService),
		orUnknown(local.CanonicalRevision), orUnknown(local.Cluster),
		unknown, orUnknown(d.namespace), unknown,
		unknown, orUnknown(d.subset), orUnknown(d.service), orUnknown(d.name),
		orUnknown(d.namespace), unknown, unknown,
		unknown,
		proto, orDash(flags), "unknown")
	return v
}

func orDash(flags string) string {
	if flags == "" {
		return "-"
	}
	return flags
}
