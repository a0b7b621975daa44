package identity

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshlet/meshlet/identity/capb"
)

// CAServer implements istio.v1.auth.IstioCertificateService on top of a
// CA: the in-process counterpart of istiod's CA, used by tests and by an
// embedded control plane.
type CAServer struct {
	capb.UnimplementedIstioCertificateServiceServer

	CA *CA
	// Authenticate maps the request's bearer token to the identity it
	// proves (istiod validates a Kubernetes token here). Required.
	Authenticate func(ctx context.Context, token string) (ID, error)
	// CanImpersonate reports whether caller may request certificates for
	// other identities (ztunnel's node identity may). nil allows nobody.
	CanImpersonate func(caller ID) bool
	// MaxTTL caps the requested lifetime; 0 means DefaultWorkloadTTL.
	MaxTTL time.Duration
}

// Register adds the service to s.
func (srv *CAServer) Register(s grpc.ServiceRegistrar) {
	capb.RegisterIstioCertificateServiceServer(s, srv)
}

// CreateCertificate authenticates the caller, checks it may have the CSR's
// identity (its own, or another's through ImpersonatedIdentity when
// allowed) and signs.
func (srv *CAServer) CreateCertificate(ctx context.Context, req *capb.IstioCertificateRequest) (*capb.IstioCertificateResponse, error) {
	token := bearerToken(ctx)
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "no bearer token in authorization metadata")
	}
	caller, err := srv.Authenticate(ctx, token)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "authenticate: %v", err)
	}
	want, _, err := ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if imp := req.GetMetadata().GetFields()[ImpersonatedIdentityKey].GetStringValue(); imp != "" {
		impID, err := Parse(imp)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", ImpersonatedIdentityKey, err)
		}
		if impID != want {
			return nil, status.Errorf(codes.InvalidArgument, "%s %s does not match the CSR's %s", ImpersonatedIdentityKey, impID, want)
		}
		if srv.CanImpersonate == nil || !srv.CanImpersonate(caller) {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not request certificates for %s", caller, want)
		}
	} else if want != caller {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not request a certificate for %s", caller, want)
	}
	maxTTL := srv.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultWorkloadTTL
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	if ttl <= 0 || ttl > maxTTL {
		ttl = maxTTL
	}
	_, chain, err := srv.CA.SignCSR([]byte(req.GetCsr()), ttl)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &capb.IstioCertificateResponse{CertChain: chain}, nil
}

func bearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	return ""
}
