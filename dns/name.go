package dns

import (
	"net/netip"
	"strings"
)

// DefaultDomain is the Kubernetes cluster domain when none is configured.
const DefaultDomain = "cluster.local"

// canonical lower-cases name and drops one trailing dot: DNS names compare
// case-insensitively and the table keys have no root label.
func canonical(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// kubeParts splits "svc.ns.svc.<domain>" into svc and ns; ok is false for
// any other shape (ServiceEntry hosts, other clusters' domains).
func kubeParts(host, domain string) (svc, ns string, ok bool) {
	rest, found := strings.CutSuffix(host, ".svc."+domain)
	if !found {
		return "", "", false
	}
	svc, ns, found = strings.Cut(rest, ".")
	if !found || svc == "" || ns == "" || strings.Contains(ns, ".") {
		return "", "", false
	}
	return svc, ns, true
}

// nameForms is every name a Kubernetes client may ask for a host that
// does not depend on who asks: the FQDN, "svc.ns" and "svc.ns.svc". The
// bare "svc" is not indexed: it means the asking pod's namespace (its
// first search domain), so find expands it per query (bareFQDN).
func nameForms(host, svc, ns string) []string {
	if svc == "" || ns == "" {
		return []string{host}
	}
	return []string{host, svc + "." + ns, svc + "." + ns + ".svc"}
}

// isIPLiteral reports whether s is an address rather than a name (route
// domains list VIPs too).
func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
