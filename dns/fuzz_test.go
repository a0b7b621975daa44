package dns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzHandle: any bytes, over either transport, produce no reply or a
// well-formed one with the query's ID, never a panic. Mesh names are
// answered from the table; no upstream is configured, so the forward path
// fails fast with SERVFAIL.
func FuzzHandle(f *testing.F) {
	for _, name := range []string{"reviews.default.svc.cluster.local.", "reviews.", "x.reviews.default.svc.cluster.local.cluster.local.", "ext.example."} {
		for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			m := dnsmessage.Message{Header: dnsmessage.Header{ID: 1}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
			b, _ := m.Pack()
			f.Add(b, false)
		}
	}
	s := &Server{
		table: meshTable(), fwd: newForwarder(nil, time.Second, 0), cache: newCache(16, nil),
		metrics: &Metrics{}, sem: make(chan struct{}, 1),
	}
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		r := s.handle(context.Background(), b, netip.Addr{}, tcp)
		if r == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(r); err != nil {
			t.Fatalf("reply does not parse: %v (% x)", err, r)
		}
		if !m.Header.Response || m.Header.ID != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("reply header %+v", m.Header)
		}
		if !tcp && len(r) > maxMsgSize {
			t.Fatalf("reply of %d bytes", len(r))
		}
	})
}
