package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshlet/meshlet/identity"
)

// defaultCATokenFile is where Istio projects the istio-ca audience token.
const defaultCATokenFile = "/var/run/secrets/tokens/istio-token"

// identityOptions are run's flags for the proxy's own workload identity:
// the "local Source" that TLS contexts naming Istio's agent-served SDS
// secrets ("default", "ROOTCA") and HBONE use. At most one source is
// chosen: files, else the Istio CA API, else the built-in CA.
type identityOptions struct {
	CADir                        string
	CAAddress                    string
	CATokenFile, CARootFile      string
	CertFile, KeyFile, RootsFile string
	CertLifetime                 time.Duration
	RotationFraction             float64
	// DialOptions are added to the CA client's (launch_run.go: the proxy
	// mark, so that capture does not redirect the CA connection).
	DialOptions []grpc.DialOption
	// From the environment, as Istio's agent reads them.
	TrustDomain, Namespace, ServiceAccount string
}

func (o *identityOptions) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&o.CADir, "ca-dir", "", "built-in CA state directory: the root is created there on first start and this proxy issues its own workload certificate from it")
	fs.StringVar(&o.CAAddress, "ca-address", getenv("CA_ADDRESS"), "Istio CA API address (istio.v1.auth.IstioCertificateService); default $CA_ADDRESS")
	fs.StringVar(&o.CATokenFile, "ca-token-file", defaultCATokenFile, "bearer token file sent to --ca-address")
	fs.StringVar(&o.CARootFile, "ca-root-file", "", "PEM roots that verify --ca-address's TLS certificate; without it the CA is reached in plaintext (tests only)")
	fs.StringVar(&o.CertFile, "cert-file", "", "PEM certificate chain with this proxy's SPIFFE ID (file identity source, reloaded on change)")
	fs.StringVar(&o.KeyFile, "key-file", "", "PEM private key for --cert-file")
	fs.StringVar(&o.RootsFile, "roots-file", "", "PEM trust bundle for --cert-file's mesh")
	fs.DurationVar(&o.CertLifetime, "cert-lifetime", 24*time.Hour, "requested workload certificate lifetime (built-in CA and Istio CA)")
	fs.Float64Var(&o.RotationFraction, "rotation-fraction", 0.5, "renew after this fraction of a certificate's remaining lifetime")
	o.TrustDomain = envOr(getenv, "TRUST_DOMAIN", "cluster.local")
	o.Namespace = envOr(getenv, "POD_NAMESPACE", "default")
	o.ServiceAccount = envOr(getenv, "SERVICE_ACCOUNT", "default")
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

func (o *identityOptions) enabled() bool {
	return o != nil && (o.CADir != "" || o.CAAddress != "" || o.CertFile != "" || o.KeyFile != "" || o.RootsFile != "")
}

// localIdentity is the running identity source and what must be stopped
// with it.
type localIdentity struct {
	src   identity.Source
	id    string
	close func()
}

// start builds the chosen source; nil when no identity flag is set.
func (o *identityOptions) start(ctx context.Context, log *slog.Logger) (*localIdentity, error) {
	if !o.enabled() {
		return nil, nil
	}
	if o.CertFile != "" || o.KeyFile != "" || o.RootsFile != "" {
		if o.CADir != "" || o.CAAddress != "" {
			return nil, errors.New("identity: --cert-file/--key-file/--roots-file cannot be combined with --ca-dir or --ca-address")
		}
		src, err := identity.NewFileSource(identity.FileOptions{CertFile: o.CertFile, KeyFile: o.KeyFile, RootsFile: o.RootsFile, Log: log})
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		return &localIdentity{src: src, close: src.Close}, nil
	}
	id := identity.ID{TrustDomain: o.TrustDomain, Namespace: o.Namespace, ServiceAccount: o.ServiceAccount}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("identity: TRUST_DOMAIN/POD_NAMESPACE/SERVICE_ACCOUNT: %w", err)
	}
	if o.CertLifetime <= 0 {
		return nil, errors.New("identity: --cert-lifetime must be positive")
	}
	if o.RotationFraction <= 0 || o.RotationFraction >= 1 {
		return nil, errors.New("identity: --rotation-fraction must be between 0 and 1")
	}
	ropts := identity.RotationOptions{Fraction: o.RotationFraction, Name: id.String(), Log: log}
	if o.CADir != "" && o.CAAddress != "" {
		return nil, errors.New("identity: --ca-dir and --ca-address are mutually exclusive")
	}
	if o.CADir != "" {
		ca, err := identity.LoadOrCreateCA(o.CADir)
		if err != nil {
			return nil, fmt.Errorf("identity: --ca-dir: %w", err)
		}
		src, err := ca.Source(ctx, id, o.CertLifetime, ropts)
		if err != nil {
			return nil, fmt.Errorf("identity: built-in CA: %w", err)
		}
		log.Info("identity from the built-in CA", "id", id.String(), "dir", o.CADir, "lifetime", o.CertLifetime)
		return &localIdentity{src: src, id: id.String(), close: src.Close}, nil
	}
	creds, err := o.caCredentials()
	if err != nil {
		return nil, err
	}
	if o.CARootFile == "" {
		log.Warn("identity: reaching the Istio CA in plaintext (no --ca-root-file)", "ca", o.CAAddress)
	}
	conn, err := grpc.NewClient(o.CAAddress, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, o.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("identity: --ca-address %q: %w", o.CAAddress, err)
	}
	tokenFile := o.CATokenFile
	if _, err := os.Stat(tokenFile); err != nil && tokenFile == defaultCATokenFile {
		tokenFile = "" // no projected token: a CA that needs none
	}
	client := identity.NewIstioCAClient(conn, tokenFile)
	src, err := client.Source(ctx, id, o.CertLifetime, false, ropts)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("identity: Istio CA %s: %w", o.CAAddress, err)
	}
	log.Info("identity from the Istio CA", "id", id.String(), "ca", o.CAAddress, "lifetime", o.CertLifetime)
	return &localIdentity{src: src, id: id.String(), close: func() { src.Close(); conn.Close() }}, nil
}

func (o *identityOptions) caCredentials() (credentials.TransportCredentials, error) {
	if o.CARootFile == "" {
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(o.CARootFile)
	if err != nil {
		return nil, fmt.Errorf("identity: --ca-root-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("identity: --ca-root-file %s: no PEM certificates", o.CARootFile)
	}
	host, _, err := net.SplitHostPort(o.CAAddress)
	if err != nil {
		host = o.CAAddress
	}
	return credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}), nil
}

func (l *localIdentity) stop() {
	if l != nil && l.close != nil {
		l.close()
	}
}
