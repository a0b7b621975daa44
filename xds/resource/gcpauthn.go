package resource

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gcpauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/gcp_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const (
	typeGCPAuthn         = "type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig"
	typeGCPAuthnAudience = "type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.Audience"
)

// decodeGCPAuthn decodes envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig.
// Fields that would change where the token goes or which kind of token is
// fetched are rejected rather than ignored: silently sending a request
// without its credential, or with the wrong one, is worse than a NACK.
func decodeGCPAuthn(tc *anypb.Any) (*state.GCPAuthnFilter, error) {
	var c gcpauthnv3.GcpAuthnFilterConfig
	if err := tc.UnmarshalTo(&c); err != nil {
		return nil, err
	}
	out := &state.GCPAuthnFilter{
		URI:       state.DefaultGCPMetadataURI,
		Timeout:   state.DefaultGCPAuthnTimeout,
		CacheSize: state.DefaultGCPAuthnCacheSize,
		Header:    state.DefaultGCPAuthnHeader,
		Prefix:    state.DefaultGCPAuthnPrefix,
	}
	var err error
	//lint:ignore SA1019 http_uri is deprecated but is the only way to point the filter at another metadata server.
	if hu := c.GetHttpUri(); hu != nil {
		if hu.GetUri() != "" {
			u, perr := url.Parse(hu.GetUri())
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, errAt("http_uri.uri", "must be an http(s) URL, got %q", hu.GetUri())
			}
			out.URI = hu.GetUri()
		}
		if out.Timeout, err = durationField("http_uri.timeout", hu.GetTimeout(), out.Timeout); err != nil {
			return nil, err
		}
	}
	// The newer timeout field wins over http_uri's, as in Envoy.
	if out.Timeout, err = durationField("timeout", c.GetTimeout(), out.Timeout); err != nil {
		return nil, err
	}
	if out.Timeout == 0 {
		out.Timeout = state.DefaultGCPAuthnTimeout
	}
	if rp := c.GetRetryPolicy(); rp != nil {
		out.Retries = 1 // num_retries defaults to 1 in core.v3.RetryPolicy
		if n := rp.GetNumRetries(); n != nil {
			out.Retries = n.GetValue()
		}
		bo := rp.GetRetryBackOff()
		if out.RetryBase, err = durationField("retry_policy.retry_back_off.base_interval", bo.GetBaseInterval(), state.DefaultGCPAuthnRetryBase); err != nil {
			return nil, err
		}
		if out.RetryBase == 0 {
			return nil, errAt("retry_policy.retry_back_off.base_interval", "must be greater than 0")
		}
		if out.RetryMax, err = durationField("retry_policy.retry_back_off.max_interval", bo.GetMaxInterval(), 10*out.RetryBase); err != nil {
			return nil, err
		}
		if out.RetryMax < out.RetryBase {
			return nil, errAt("retry_policy.retry_back_off.max_interval", "must not be less than base_interval")
		}
	}
	if cc := c.GetCacheConfig(); cc != nil && cc.GetCacheSize() != nil {
		n := cc.GetCacheSize().GetValue()
		if n > 1<<20 {
			return nil, errAt("cache_config.cache_size", "%d is too large (at most %d)", n, 1<<20)
		}
		out.CacheSize = int(n)
	}
	if th := c.GetTokenHeader(); th != nil {
		if th.GetName() == "" {
			return nil, errAt("token_header.name", "is required")
		}
		out.Header = strings.ToLower(th.GetName())
		out.Prefix = th.GetValuePrefix()
		out.PreserveExisting = th.GetPreserveExisting() != nil
	}
	if c.GetTokenMetadataKey() != "" {
		return nil, errAt("token_metadata_key", "is not supported (meshlet has no dynamic metadata)")
	}
	if a := c.GetAudience(); a != nil {
		if out.Audience, err = decodeGCPAudience(a); err != nil {
			return nil, at("audience", err)
		}
	}
	return out, nil
}

// decodeGCPAudience returns Audience.url; the other token kinds (access
// tokens, bound tokens) are not supported.
func decodeGCPAudience(a *gcpauthnv3.Audience) (string, error) {
	switch {
	case a.GetIamAccessToken() != nil:
		return "", errAt("iam_access_token", "is not supported")
	case a.GetBoundAccessToken() != nil:
		return "", errAt("bound_access_token", "is not supported")
	case a.GetBoundJwt() != nil:
		return "", errAt("bound_jwt", "is not supported")
	case a.GetAccessToken() != nil:
		return "", errAt("access_token", "is not supported")
	case a.GetUrl() == "":
		return "", errAt("url", "is required")
	}
	return a.GetUrl(), nil
}

// decodeGCPAudiences collects the gcp_authn audiences of a cluster's
// metadata: typed_filter_metadata entries of type Audience (the form A83
// and Envoy define), and filter_metadata entries under the filter's
// well-known name holding {"url": ...} (the same message as JSON, for
// control planes that only write Struct metadata). Typed entries win.
func decodeGCPAudiences(md *corev3.Metadata) (state.GCPAudiences, error) {
	var out state.GCPAudiences
	add := func(k, v string) {
		if out == nil {
			out = state.GCPAudiences{}
		}
		out[k] = v
	}
	if s := md.GetFilterMetadata()[state.FilterGCPAuthn]; s != nil {
		path := "filter_metadata." + state.FilterGCPAuthn
		v, ok := s.GetFields()["url"]
		if !ok || v.GetStringValue() == "" {
			return nil, errAt(path+".url", "must be a non-empty string")
		}
		add(state.FilterGCPAuthn, v.GetStringValue())
	}
	keys := make([]string, 0, len(md.GetTypedFilterMetadata()))
	for k := range md.GetTypedFilterMetadata() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := md.GetTypedFilterMetadata()[k]
		if a.GetTypeUrl() != typeGCPAuthnAudience {
			continue
		}
		path := fmt.Sprintf("typed_filter_metadata[%q]", k)
		var aud gcpauthnv3.Audience
		if err := a.UnmarshalTo(&aud); err != nil {
			return nil, at(path, err)
		}
		u, err := decodeGCPAudience(&aud)
		if err != nil {
			return nil, at(path, err)
		}
		add(k, u)
	}
	return out, nil
}
