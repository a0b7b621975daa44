package hbone

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"strings"
)

// Header names ztunnel sets on the CONNECT request.
const (
	headerForwarded   = "Forwarded"   // RFC 7239; for= carries the original client IP
	headerBaggage     = "Baggage"     // W3C baggage; ztunnel puts the source workload's labels here
	headerTraceParent = "Traceparent" // W3C trace context; one id per tunneled connection
)

// Meta is the per-connection metadata carried on the CONNECT request.
type Meta struct {
	// ForwardedFor is the original client's address (Forwarded: for=...).
	ForwardedFor netip.Addr
	// Baggage is the raw W3C baggage value (see Baggage.String).
	Baggage string
	// TraceParent is a W3C traceparent; the client generates one when empty.
	TraceParent string
}

func (m Meta) write(h http.Header) {
	if m.ForwardedFor.IsValid() {
		h.Set(headerForwarded, forwardedFor(m.ForwardedFor))
	}
	if m.Baggage != "" {
		h.Set(headerBaggage, m.Baggage)
	}
	tp := m.TraceParent
	if !validTraceParent(tp) {
		tp = NewTraceParent()
	}
	h.Set(headerTraceParent, tp)
}

func readMeta(h http.Header) Meta {
	m := Meta{Baggage: h.Get(headerBaggage)}
	m.ForwardedFor, _ = parseForwardedFor(h.Get(headerForwarded))
	if tp := h.Get(headerTraceParent); validTraceParent(tp) {
		m.TraceParent = tp
	}
	return m
}

// forwardedFor renders RFC 7239's for= parameter; IPv6 must be quoted and
// bracketed.
func forwardedFor(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		return `for="[` + a.String() + `]"`
	}
	return "for=" + a.String()
}

// parseForwardedFor reads for= of the first (closest to the original
// client) element of a Forwarded header. Obfuscated identifiers ("_x",
// "unknown") yield false.
func parseForwardedFor(v string) (netip.Addr, bool) {
	first, _, _ := strings.Cut(v, ",")
	for _, pair := range strings.Split(first, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		val = strings.Trim(strings.TrimSpace(val), `"`)
		if ap, err := netip.ParseAddrPort(val); err == nil {
			return ap.Addr().Unmap(), true
		}
		val = strings.TrimSuffix(strings.TrimPrefix(val, "["), "]")
		if a, err := netip.ParseAddr(val); err == nil {
			return a.Unmap(), true
		}
		return netip.Addr{}, false
	}
	return netip.Addr{}, false
}

// NewTraceParent returns a fresh W3C traceparent (version 00, random trace
// and span ids, not sampled) as ztunnel generates per outbound connection.
func NewTraceParent() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}

// validTraceParent accepts version-00 traceparents with non-zero ids.
func validTraceParent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] != "00" {
		return false
	}
	for _, part := range []string{s[3:35], s[36:52], s[53:]} {
		if strings.Trim(part, "0123456789abcdef") != "" {
			return false
		}
		if strings.Trim(part, "0") == "" && len(part) > 2 {
			return false
		}
	}
	return true
}

// Baggage is the source-workload description ztunnel sends in the baggage
// header and reads on the other side for telemetry.
type Baggage struct {
	ClusterID    string // k8s.cluster.name
	Namespace    string // k8s.namespace.name
	WorkloadType string // deployment, daemonset, ... (k8s.TYPE.name)
	WorkloadName string
	Service      string // service.name
	Revision     string // service.version
}

// String renders b as a W3C baggage value, omitting empty members.
func (b Baggage) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("k8s.cluster.name", b.ClusterID)
	add("k8s.namespace.name", b.Namespace)
	if b.WorkloadType != "" {
		add("k8s."+b.WorkloadType+".name", b.WorkloadName)
	}
	add("service.name", b.Service)
	add("service.version", b.Revision)
	return strings.Join(parts, ",")
}

// workloadTypes are the k8s.TYPE.name keys ztunnel understands.
var workloadTypes = []string{"deployment", "replicaset", "pod", "daemonset", "statefulset", "job", "cronjob"}

// ParseBaggage reads the members Baggage knows; others (and W3C member
// properties after ';') are ignored.
func ParseBaggage(v string) Baggage {
	var b Baggage
	for _, m := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok {
			continue
		}
		val, _, _ = strings.Cut(val, ";")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		switch k {
		case "k8s.cluster.name":
			b.ClusterID = val
		case "k8s.namespace.name":
			b.Namespace = val
		case "service.name":
			b.Service = val
		case "service.version":
			b.Revision = val
		default:
			for _, t := range workloadTypes {
				if k == "k8s."+t+".name" {
					b.WorkloadType, b.WorkloadName = t, val
				}
			}
		}
	}
	return b
}
