package httpproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// h2FuzzFrames builds a seed: frames written with a real Framer.
func h2FuzzFrames(f *testing.F, write func(fr *http2.Framer, hdr []byte)) []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/fuzz"}, {":authority", "a"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]}); err != nil {
			f.Fatal(err)
		}
	}
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	if err := fr.WriteSettings(); err != nil {
		f.Fatal(err)
	}
	write(fr, hb.Bytes())
	return out.Bytes()
}

// FuzzH2ServerFrames feeds arbitrary bytes, after a valid client preface,
// to the HTTP/2 server over a net.Pipe: it must not panic, and once the
// client goes away the connection must be torn down within a bounded time.
// The only cluster refuses connections, so a request that gets through
// ends in a local reply without leaving the process.
func FuzzH2ServerFrames(f *testing.F) {
	hdrs := func(fr *http2.Framer, hdr []byte, end bool) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr, EndHeaders: true, EndStream: end})
	}
	for _, seed := range []func(fr *http2.Framer, hdr []byte){
		func(fr *http2.Framer, hdr []byte) { hdrs(fr, hdr, true) },
		func(fr *http2.Framer, hdr []byte) {
			hdrs(fr, hdr, false)
			_ = fr.WriteData(1, true, []byte("body"))
		},
		func(fr *http2.Framer, hdr []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr[:3]})
			_ = fr.WriteContinuation(1, true, hdr[3:])
		},
		func(fr *http2.Framer, hdr []byte) {
			hdrs(fr, hdr, false)
			_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
			_ = fr.WritePing(false, [8]byte{1})
			_ = fr.WriteWindowUpdate(0, 1<<20)
		},
		func(fr *http2.Framer, hdr []byte) {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		},
	} {
		f.Add(h2FuzzFrames(f, seed))
	}

	store := state.NewStore()
	store.Update(func(next *state.Snapshot) bool {
		c := staticCluster("refused", state.UpstreamHTTP1, "127.0.0.1:1")
		next.Clusters[c.Name] = c
		return true
	})
	mgr := upstream.NewManager(store, nil)
	f.Cleanup(mgr.Close)
	p := New(store, mgr, Options{Hostname: "fuzz"}, nil)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, RouteConfig: routeAll("refused")}
	info := &ConnInfo{
		Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Local: netip.MustParseAddrPort("127.0.0.1:80"),
		Listener: "fuzz",
	}
	info.OriginalDst = info.Local

	f.Fuzz(func(t *testing.T, frames []byte) {
		client, server := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.serveHTTP2(ctx, server, hcm, info)
		}()
		read := make(chan struct{})
		go func() {
			defer close(read)
			_, _ = io.Copy(io.Discard, client)
		}()
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := client.Write([]byte(http2.ClientPreface)); err == nil {
			_, _ = client.Write(frames)
		}
		// Give the server a moment to act on what it read, then leave.
		time.Sleep(time.Millisecond)
		client.Close()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("server still serving 3s after the client closed; frames %x", frames)
		}
		<-read
	})
}
