package dns

import (
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func testQuery(t *testing.T, name string) (query, []byte) {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := parseQuery(b)
	if err != nil {
		t.Fatal(err)
	}
	return q, b
}

func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCache(2, func() time.Time { return now })
	put := func(name string) {
		q, b := testQuery(t, name)
		c.put(&q, upstreamAnswer(b, true))
	}
	get := func(name string) *dnsmessage.Message {
		q, _ := testQuery(t, name)
		r := c.get(&q, maxMsgSize)
		if r == nil {
			return nil
		}
		var m dnsmessage.Message
		if err := m.Unpack(r); err != nil {
			t.Fatal(err)
		}
		return &m
	}

	put("ext.example.")
	now = now.Add(20 * time.Second)
	m := get("ext.example.")
	if m == nil || len(m.Answers) != 1 || m.Answers[0].Header.TTL != 40 || m.Header.ID != 7 {
		t.Fatalf("after 20s: %+v", m)
	}
	now = now.Add(40 * time.Second) // TTL 60 used up
	if m := get("ext.example."); m != nil {
		t.Fatalf("served past its TTL: %+v", m)
	}

	// Negative answers live for min(SOA TTL, SOA minimum) = 10s.
	put("nx.example.")
	now = now.Add(9 * time.Second)
	if m := get("nx.example."); m == nil || m.Header.RCode != dnsmessage.RCodeNameError {
		t.Fatalf("nx after 9s: %+v", m)
	}
	now = now.Add(2 * time.Second)
	if get("nx.example.") != nil {
		t.Fatal("nx served after 11s")
	}

	// SERVFAIL and unknown names without records are not kept.
	put("fail.example.")
	put("nothing.example.")
	if get("fail.example.") != nil || get("nothing.example.") != nil {
		t.Fatal("cached an uncachable answer")
	}

	// Least recently used goes first.
	put("ext.example.")
	put("big.example.")
	get("ext.example.")
	put("nx.example.")
	if get("ext.example.") == nil || get("big.example.") != nil || get("nx.example.") == nil {
		t.Fatal("LRU eviction kept the wrong entries")
	}
}
