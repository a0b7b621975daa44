package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// serveH2WithSink runs a proxy with sink on a loopback listener speaking
// HTTP/2 prior knowledge and returns its address.
func serveH2WithSink(t *testing.T, sink *recSink, rc *state.RouteConfig, clusters ...*state.Cluster) string {
	t.Helper()
	h2LeakCheck(t)
	store := state.NewStore()
	store.Update(func(s *state.Snapshot) bool {
		for _, c := range clusters {
			s.Clusters[c.Name] = c
		}
		return true
	})
	mgr := upstream.NewManager(store, nil)
	p := New(store, mgr, Options{Sink: sink}, nil)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, RouteConfig: rc}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			info := &ConnInfo{Remote: netip.MustParseAddrPort(c.RemoteAddr().String()),
				Local: netip.MustParseAddrPort(c.LocalAddr().String()), Listener: "h2-out"}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.ServeConn(ctx, c, hcm, info)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		mgr.Close()
	})
	return ln.Addr().String()
}

func TestH2RecordFields(t *testing.T) {
	be := newH2Backend(t, 100, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/grpc" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			w.Write(b)
			w.Header().Set("Grpc-Status", "7")
			return
		}
		w.Header().Set("X-Backend", "yes")
		w.WriteHeader(201)
		w.Write(append(b, b...))
	}))
	sink := newRecSink("x-backend")
	rc := routeAll("be")
	rc.VirtualHosts[0].Routes = append([]*state.Route{{Name: "direct", Match: state.RouteMatch{Kind: state.PathExact, Path: "/direct", CaseSensitive: true},
		DirectResponse: &state.DirectResponseAction{Status: 418, Body: []byte("teapot")}}}, rc.VirtualHosts[0].Routes...)
	addr := serveH2WithSink(t, sink, rc, staticCluster("be", state.UpstreamHTTP2, be.addr))
	client, _ := h2cClient(t)

	tests := []struct {
		name, path, ct string
		body           string
		code, grpc     int
		route, cluster string
		recv, sent     int64
		header         string
	}{
		{name: "proxied", path: "/x?y=1", body: "abcd", code: 201, grpc: -1, route: "default", cluster: "be", recv: 4, sent: 8, header: "yes"},
		{name: "grpc trailer status", path: "/grpc", ct: "application/grpc", body: "pb", code: 200, grpc: 7, route: "default", cluster: "be", recv: 2, sent: 2},
		{name: "direct response", path: "/direct", code: 418, grpc: -1, route: "direct", sent: 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+addr+tc.path, strings.NewReader(tc.body))
			req.Header.Set("X-Request-Id", "rid-"+tc.name)
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r, hv := sink.next(t)
			if r.ResponseCode != tc.code || r.GRPCStatus != tc.grpc || r.RouteName != tc.route || r.UpstreamCluster != tc.cluster ||
				r.Protocol != "HTTP/2" || r.Method != "POST" || r.Path != tc.path || r.RequestID != "rid-"+tc.name || r.Listener != "h2-out" {
				t.Errorf("record: code %d grpc %d route %q cluster %q proto %s %s %s rid %q listener %q",
					r.ResponseCode, r.GRPCStatus, r.RouteName, r.UpstreamCluster, r.Protocol, r.Method, r.Path, r.RequestID, r.Listener)
			}
			if r.BytesReceived != tc.recv || r.BytesSent != tc.sent {
				t.Errorf("bytes received %d sent %d, want %d %d", r.BytesReceived, r.BytesSent, tc.recv, tc.sent)
			}
			if hv != tc.header {
				t.Errorf("Headers.ResponseHeader = %q, want %q", hv, tc.header)
			}
		})
	}
}
