package dns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// BenchmarkHandleTable measures answering a mesh name (parse, lookup,
// pack), the path every captured lookup of a mesh service takes.
func BenchmarkHandleTable(b *testing.B) {
	s := &Server{table: meshTable(), fwd: newForwarder(nil, time.Second, 0), cache: newCache(16, nil), metrics: &Metrics{}}
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("reviews.default.svc.cluster.local."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	q, _ := m.Pack()
	b.ReportAllocs()
	for b.Loop() {
		if r := s.handle(context.Background(), q, netip.Addr{}, false); len(r) == 0 {
			b.Fatal("no answer")
		}
	}
}
