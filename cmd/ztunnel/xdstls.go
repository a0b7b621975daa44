package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshlet/meshlet/identity"
)

// xdsTLSOptions secure the connection to the control plane: istiod serves
// xDS on 15012 over TLS with a certificate from the mesh CA and
// authenticates proxies by a service account token or a workload
// certificate. `ztunnel run` and `ztunnel agent` share these flags.
type xdsTLSOptions struct {
	enable, mtls         bool
	rootFile, serverName string
	tokenFile            string // run only
}

func (o *xdsTLSOptions) register(fs *flag.FlagSet, addressFlag string, withToken bool) {
	fs.StringVar(&o.rootFile, "xds-root-file", "", "PEM roots verifying the control plane's certificate (Istio: /var/run/secrets/istio/root-cert.pem); implies --xds-tls")
	fs.StringVar(&o.serverName, "xds-server-name", "", "name checked against the control plane's certificate (default: the host of "+addressFlag+"; Istio: istiod.istio-system.svc)")
	fs.BoolVar(&o.enable, "xds-tls", false, "TLS to the control plane, verified with --xds-root-file or else the workload trust bundle")
	fs.BoolVar(&o.mtls, "xds-mtls", false, "present the workload certificate to the control plane (implies --xds-tls)")
	if withToken {
		fs.StringVar(&o.tokenFile, "xds-token-file", "", "send this file's token as `authorization: Bearer` on the ADS stream (Istio: /var/run/secrets/tokens/istio-token); implies --xds-tls")
	}
}

func (o *xdsTLSOptions) on() bool {
	return o.enable || o.mtls || o.rootFile != "" || o.tokenFile != ""
}

// spec is the TLS policy, nil when the connection is plaintext.
func (o *xdsTLSOptions) spec() (*identity.ControlPlaneTLS, error) {
	if !o.on() {
		return nil, nil
	}
	s := &identity.ControlPlaneTLS{ServerName: o.serverName, ClientCert: o.mtls}
	if o.rootFile != "" {
		pem, err := os.ReadFile(o.rootFile)
		if err != nil {
			return nil, fmt.Errorf("--xds-root-file: %w", err)
		}
		s.Roots = x509.NewCertPool()
		if !s.Roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--xds-root-file %s: no PEM certificates", o.rootFile)
		}
	}
	return s, nil
}

// dialOptions are the ADS client's credentials for address; nil when the
// connection is plaintext. src is the workload identity (nil without one).
func (o *xdsTLSOptions) dialOptions(address string, src identity.Source) ([]grpc.DialOption, error) {
	s, err := o.spec()
	if err != nil || s == nil {
		return nil, err
	}
	tc, err := identity.ControlPlaneConfig(address, *s, src)
	if err != nil {
		return nil, fmt.Errorf("xDS TLS: %w", err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if o.tokenFile != "" {
		if _, err := os.Stat(o.tokenFile); err != nil {
			return nil, fmt.Errorf("--xds-token-file: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(identity.TokenFile(o.tokenFile)))
	}
	return opts, nil
}
