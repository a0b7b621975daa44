package whitebox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"time"
)

// connectEstablished answers a CONNECT whose tunnel is handed over.
const connectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n"

// startProxy serves the HTTP proxy on s.proxyLn.
//
// Absolute-form requests go through a ReverseProxy whose transport dials
// "the destination" as a loopback pair whose far end the data plane serves
// as a connection captured to it; the transport keeps one pool per
// destination, so each request is routed by the listener for its own
// destination even when a client sends requests for several services over
// one proxy connection (Go's and curl's clients do).
func (s *Server) startProxy() {
	s.tr = &http.Transport{
		DialContext:         s.dialMesh,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// The client's own Accept-Encoding passes through unchanged.
		DisableCompression: true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The outbound request keeps the absolute URL (the transport
			// dials its host) and the client's Host header, which selects
			// the virtual host.
			pr.Out.Host = pr.In.Host
		},
		Transport:     s.tr,
		FlushInterval: -1, // stream: server-sent events, gRPC-web
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status := http.StatusBadGateway
			var ue unknownDstError
			if errors.As(err, &ue) {
				status = ue.status
			}
			httpError(w, status, fmt.Sprintf("whitebox: %s: %v", r.URL.Host, err))
		},
	}
	s.http = &http.Server{
		Handler:           &proxyHandler{s: s, rp: rp},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = s.http.Serve(s.proxyLn) }()
	s.log.Info("whitebox HTTP proxy listening", "addr", s.proxyLn.Addr().String())
}

type proxyHandler struct {
	s  *Server
	rp *httputil.ReverseProxy
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		h.s.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Host == "" {
		httpError(w, http.StatusBadRequest, "whitebox: not a proxy request: send an absolute URI (GET http://host:port/path) or CONNECT host:port")
		return
	}
	if r.URL.Scheme != "http" {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("whitebox: scheme %q: only http:// is proxied in absolute form; use CONNECT (HTTPS_PROXY) for TLS", r.URL.Scheme))
		return
	}
	// Resolve now so an unknown destination gets a clear answer instead
	// of a dial error; dialMesh resolves again per new pooled connection.
	if _, status, err := h.s.destination(r.Context(), r.URL.Host, 80); err != nil {
		httpError(w, status, "whitebox: "+err.Error())
		return
	}
	h.rp.ServeHTTP(w, r)
}

// connect hands the client's connection, after the CONNECT head, to the
// data plane as a connection captured to the named destination: whatever
// the listener for that destination serves (tcp_proxy, an HTTP connection
// manager, TLS passthrough by SNI) runs inside the tunnel.
func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	dst, status, err := s.destination(r.Context(), r.Host, 0)
	if err != nil {
		httpError(w, status, "whitebox: "+err.Error())
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		httpError(w, http.StatusInternalServerError, "whitebox: connection cannot be taken over")
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		_ = conn.Close()
		return
	}
	// A client may send its first bytes (a TLS ClientHello) without
	// waiting for the 200; net/http may already have buffered them.
	var pre []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		pre = append([]byte(nil), b...)
	}
	if _, err := tc.Write([]byte(connectEstablished)); err != nil {
		_ = tc.Close()
		return
	}
	remote := tc.RemoteAddr().(*net.TCPAddr).AddrPort()
	if err := s.opts.Dataplane.HandleAs(tc, pre, remote, dst); err != nil {
		// The config changed between the check and now: the tunnel is
		// already accepted, so all we can do is close it.
		_ = tc.Close()
	}
}

// unknownDstError carries the status a failed destination lookup maps to.
type unknownDstError struct {
	status int
	err    error
}

func (e unknownDstError) Error() string { return e.err.Error() }
func (e unknownDstError) Unwrap() error { return e.err }

// destination resolves hostport (def: port when missing, 0: required) and
// checks a listener would serve it. The status is 400 for a malformed
// target, 502 for a name neither the mesh nor DNS knows, 503 for an
// address no listener serves.
func (s *Server) destination(ctx context.Context, hostport string, def uint16) (netip.AddrPort, int, error) {
	host, port, err := splitTarget(hostport, def)
	if err != nil {
		return netip.AddrPort{}, http.StatusBadRequest, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dst, err := s.res.resolve(ctx, host, port)
	if err != nil {
		return dst, http.StatusBadGateway, err
	}
	if !s.opts.Dataplane.Serves(dst) {
		return dst, http.StatusServiceUnavailable, fmt.Errorf("no mesh listener for %s (resolved from %s)",
			dst, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	return dst, 0, nil
}

// dialMesh is the transport's dialer: a loopback pair whose far end is
// served by the data plane as captured to addr's destination.
func (s *Server) dialMesh(ctx context.Context, _, addr string) (net.Conn, error) {
	dst, status, err := s.destination(ctx, addr, 80)
	if err != nil {
		return nil, unknownDstError{status: status, err: err}
	}
	client, server, err := tcpPair()
	if err != nil {
		return nil, fmt.Errorf("loopback pair: %w", err)
	}
	remote := client.LocalAddr().(*net.TCPAddr).AddrPort()
	go func() {
		if err := s.opts.Dataplane.HandleAs(server, nil, remote, dst); err != nil {
			_ = server.Close()
		}
	}()
	return client, nil
}

// httpError writes a plain-text error that says it came from the proxy,
// not from the destination.
func httpError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Proxy-Status", "meshlet-whitebox")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}
