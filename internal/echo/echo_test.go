package echo

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startEcho(t *testing.T, version string) *Server {
	t.Helper()
	s, err := Start(version)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestHTTP(t *testing.T) {
	s := startEcho(t, "v7")
	tests := []struct {
		name       string
		h2c        bool
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantProto  string
	}{
		{"http1 get", false, "GET", "/a/b?x=1", map[string]string{"X-Canary": "true", "Authorization": "secret"}, 200, "HTTP/1.1"},
		{"h2c post", true, "POST", "/grpc-less", nil, 200, "HTTP/2.0"},
		{"status param", false, "GET", "/?status=503", nil, 503, "HTTP/1.1"},
		{"h2c status", true, "GET", "/?status=404", nil, 404, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{}
			if tt.h2c {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				tr.Protocols = &p
			}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest(tt.method, "http://"+s.HTTPAddr.String()+tt.path, strings.NewReader("body"))
			req.Host = "svc.example"
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if v := resp.Header.Get(HeaderVersion); v != "v7" {
				t.Errorf("%s = %q, want v7", HeaderVersion, v)
			}
			var body Response
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Version != "v7" || body.Method != tt.method || body.Path != tt.path ||
				body.Host != "svc.example" || body.Proto != tt.wantProto {
				t.Errorf("body = %+v", body)
			}
			for k, v := range tt.header {
				lk := strings.ToLower(k)
				got, shown := body.Headers[lk]
				if strings.HasPrefix(lk, "x-") && got != v {
					t.Errorf("header %s = %q, want %q", lk, got, v)
				}
				if !strings.HasPrefix(lk, "x-") && shown {
					t.Errorf("header %s should not be echoed", lk)
				}
			}
		})
	}
}

func TestHTTPDelay(t *testing.T) {
	s := startEcho(t, "v1")
	start := time.Now()
	resp, err := http.Get("http://" + s.HTTPAddr.String() + "/?delay=150ms")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("answered after %v, want >= 150ms", d)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestGRPC(t *testing.T) {
	s := startEcho(t, "v2")
	conn, err := grpc.NewClient(s.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	t.Run("check", func(t *testing.T) {
		tests := []struct {
			name     string
			service  string
			wantCode codes.Code
		}{
			{"server", "", codes.OK},
			{"unknown service", "grpc.testing.TestService", codes.NotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				var hdr metadata.MD
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service}, grpc.Header(&hdr))
				if got := status.Code(err); got != tt.wantCode {
					t.Fatalf("Check(%q) code = %v (%v), want %v", tt.service, got, err, tt.wantCode)
				}
				if got := hdr.Get(HeaderVersion); len(got) != 1 || got[0] != "v2" {
					t.Errorf("header %s = %v, want [v2]", HeaderVersion, got)
				}
				if tt.wantCode == codes.OK && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("status = %v, want SERVING", resp.GetStatus())
				}
			})
		}
	})

	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("watch = %v, %v; want SERVING", resp, err)
		}
		smd, err := stream.Header()
		if err != nil || len(smd.Get(HeaderVersion)) == 0 || smd.Get(HeaderVersion)[0] != "v2" {
			t.Errorf("stream header = %v, %v; want %s: v2", smd, err, HeaderVersion)
		}
	})
}
