package httpproxy

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

func TestProxyH1KeepAliveReuse(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	e := newProxyEnv(t, simpleHCM("c"), h1Cluster("c", be.hostport()))
	c := e.client()
	for i := 0; i < 20; i++ {
		resp, err := c.Get("http://example.com/p" + fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprintf("hello /p%d", i) {
			t.Fatalf("got %d %q", resp.StatusCode, b)
		}
		if f := resp.Header.Get(HeaderResponseFlags); f != "-" {
			t.Fatalf("flags %q", f)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections, want 1 (keep-alive reuse)", n)
	}
}
