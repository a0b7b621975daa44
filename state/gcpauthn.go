package state

import "time"

// FilterGCPAuthn is the name Envoy documents for the GCP authentication
// filter. It is also the cluster metadata key the filter reads the
// audience from when the cluster has no entry under the filter's own
// instance name.
const FilterGCPAuthn = "envoy.filters.http.gcp_authn"

// Defaults of envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig
// (gRFC A83 for the cache size).
const (
	DefaultGCPMetadataURI     = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=[AUDIENCE]"
	DefaultGCPAuthnTimeout    = 10 * time.Second
	DefaultGCPAuthnCacheSize  = 10
	DefaultGCPAuthnHeader     = "authorization"
	DefaultGCPAuthnPrefix     = "Bearer "
	GCPAudiencePlaceholder    = "[AUDIENCE]"
	DefaultGCPAuthnRetryBase  = time.Second
	DefaultGCPAuthnMaxBackoff = 10 * time.Second
)

// GCPAuthnFilter mirrors the supported part of
// envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig: fetch an
// ID token (JWT) for the upstream cluster's audience from the GCE metadata
// server and put it in a request header.
type GCPAuthnFilter struct {
	// URI is the metadata server URL; GCPAudiencePlaceholder in it is
	// replaced by the query-escaped audience.
	URI     string
	Timeout time.Duration
	// Retries is retry_policy.num_retries: extra attempts after a failed
	// fetch (0 when retry_policy is unset: one attempt, then fail).
	Retries uint32
	// RetryBase and RetryMax bound the jittered exponential backoff
	// between attempts (retry_back_off).
	RetryBase, RetryMax time.Duration
	// CacheSize bounds the per-audience token cache (LRU). 0 disables
	// caching, as cache_size: 0 does in Envoy.
	CacheSize int
	// Header is the lower-case request header the token goes in, with
	// Prefix in front of it ("authorization: Bearer TOKEN" by default).
	Header string
	Prefix string
	// PreserveExisting leaves a request that already has Header alone
	// (token_header.preserve_existing).
	PreserveExisting bool
	// Audience, when set, is the filter-level audience that overrides the
	// cluster's metadata.
	Audience string
}

// GCPAudiences maps a cluster metadata key (an HTTP filter instance name)
// to the audience URL of envoy.extensions.filters.http.gcp_authn.v3.Audience
// found under it.
type GCPAudiences map[string]string

// Lookup returns the audience for the filter instance named filter, falling
// back to the well-known filter name.
func (a GCPAudiences) Lookup(filter string) (string, bool) {
	if v, ok := a[filter]; ok {
		return v, true
	}
	v, ok := a[FilterGCPAuthn]
	return v, ok
}
