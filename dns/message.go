package dns

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"golang.org/x/net/dns/dnsmessage"
)

// Size limits from RFC 1035 (UDP without EDNS) and RFC 6891.
const (
	minUDPSize = 512
	maxMsgSize = 65535
	// ourUDPSize is the EDNS payload size we advertise in our answers: the
	// DNS flag day 2020 value, which avoids IP fragmentation.
	ourUDPSize = 1232
	// TTL is the TTL of table answers, as Istio's agent uses: short, so
	// clients that cache pick up new VIPs quickly.
	TTL = 30
)

// query is what the handler needs from a parsed request.
type query struct {
	header   dnsmessage.Header
	question dnsmessage.Question
	// edns is true when the request carried an OPT record; udpSize is the
	// payload size it offered and do its DNSSEC OK bit.
	edns    bool
	udpSize int
	do      bool
}

// errFormat marks a request we answer with FORMERR; errDrop one we cannot
// answer at all (too short for a header, or a response).
var (
	errFormat = errors.New("malformed query")
	errDrop   = errors.New("not a query")
)

// parseQuery parses b. With errFormat the returned header is valid (its ID
// is needed for the FORMERR); with errDrop nothing is.
func parseQuery(b []byte) (query, error) {
	var q query
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return q, errDrop
	}
	q.header = h
	if h.Response {
		return q, errDrop
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return q, errFormat
	}
	q.question = qs[0]
	if err := p.SkipAllAnswers(); err != nil {
		return q, errFormat
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return q, errFormat
	}
	for {
		rh, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return q, errFormat
		}
		if rh.Type == dnsmessage.TypeOPT {
			if q.edns { // RFC 6891 6.1.1: more than one OPT is FORMERR
				return q, errFormat
			}
			q.edns = true
			q.udpSize = int(rh.Class)
			q.do = rh.TTL&(1<<15) != 0
		}
		if err := p.SkipAdditional(); err != nil {
			return q, errFormat
		}
	}
	return q, nil
}

// maxSize is the largest answer the client can take over the transport.
func (q *query) maxSize(tcp bool) int {
	if tcp {
		return maxMsgSize
	}
	if q.edns && q.udpSize > minUDPSize {
		return q.udpSize
	}
	return minUDPSize
}

// replyHeader is the response header for q: same ID, opcode and RD, and
// recursion available (we forward whatever we do not know).
func (q *query) replyHeader(rcode dnsmessage.RCode, authoritative bool) dnsmessage.Header {
	return dnsmessage.Header{
		ID: q.header.ID, Response: true, OpCode: q.header.OpCode,
		Authoritative: authoritative, RecursionDesired: q.header.RecursionDesired,
		RecursionAvailable: true, RCode: rcode,
	}
}

// optHeader is our OPT record, added to answers when the client used EDNS.
func optHeader() dnsmessage.ResourceHeader {
	var rh dnsmessage.ResourceHeader
	_ = rh.SetEDNS0(ourUDPSize, dnsmessage.RCodeSuccess, false)
	return rh
}

// errorReply is a reply carrying only rcode (and the question when it
// parsed). It is small enough for any transport.
func errorReply(q *query, rcode dnsmessage.RCode, withQuestion bool) []byte {
	msg := dnsmessage.Message{Header: q.replyHeader(rcode, false)}
	if withQuestion {
		msg.Questions = []dnsmessage.Question{q.question}
	}
	if q.edns && withQuestion {
		msg.Additionals = []dnsmessage.Resource{{Header: optHeader(), Body: &dnsmessage.OPTResource{}}}
	}
	b, err := msg.Pack()
	if err != nil {
		// Only the question can fail to pack; drop it.
		msg.Questions, msg.Additionals = nil, nil
		b, _ = msg.Pack()
	}
	return b
}

// tableReply answers q from the table: NXDOMAIN for a search expansion,
// the records of the asked family otherwise (none, i.e. NODATA, when the
// name has only the other family or another type is asked). The answer is
// authoritative, as Istio's: we own these names.
func tableReply(q *query, a *answer, v verdict, max int) []byte {
	rcode := dnsmessage.RCodeSuccess
	if v == nxdomain {
		rcode = dnsmessage.RCodeNameError
	}
	msg := dnsmessage.Message{Header: q.replyHeader(rcode, true), Questions: []dnsmessage.Question{q.question}}
	if a != nil {
		rh := dnsmessage.ResourceHeader{Name: q.question.Name, Class: dnsmessage.ClassINET, TTL: TTL}
		switch q.question.Type {
		case dnsmessage.TypeA:
			rh.Type = dnsmessage.TypeA
			for _, ip := range rotate(a.v4) {
				msg.Answers = append(msg.Answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: ip.As4()}})
			}
		case dnsmessage.TypeAAAA:
			rh.Type = dnsmessage.TypeAAAA
			for _, ip := range rotate(a.v6) {
				msg.Answers = append(msg.Answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: ip.As16()}})
			}
		}
	}
	if q.edns {
		msg.Additionals = []dnsmessage.Resource{{Header: optHeader(), Body: &dnsmessage.OPTResource{}}}
	}
	return packFit(&msg, max)
}

// packFit packs msg; if the result exceeds max, it drops the records and
// sets TC so the client retries over TCP (RFC 2181 9: a truncated answer
// is not to be used, so keeping part of it gains nothing).
func packFit(msg *dnsmessage.Message, max int) []byte {
	b, err := msg.AppendPack(make([]byte, 0, 512))
	if err == nil && len(b) <= max {
		return b
	}
	var opt []dnsmessage.Resource
	for _, r := range msg.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT {
			opt = append(opt[:0], r)
		}
	}
	t := dnsmessage.Message{Header: msg.Header, Questions: msg.Questions, Additionals: opt}
	t.Header.Truncated = err == nil
	if err != nil {
		t.Header.RCode = dnsmessage.RCodeServerFailure
	}
	b, _ = t.Pack()
	return b
}

// rotate returns addrs rotated by a cheap per-call offset so clients that
// take the first address spread over a headless service's endpoints.
func rotate(addrs []netip.Addr) []netip.Addr {
	if len(addrs) < 2 {
		return addrs
	}
	n := int(rotation.Add(1) % uint64(len(addrs)))
	out := make([]netip.Addr, 0, len(addrs))
	out = append(out, addrs[n:]...)
	return append(out, addrs[:n]...)
}

// rotation advances on every multi-address table answer (rotate).
var rotation atomic.Uint64
