//lint:file-ignore SA1019 deprecated Envoy fields (source_ip, metadata) are still sent by control planes and must be honoured or rejected by name, not ignored.

package resource

import (
	"errors"
	"fmt"
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const (
	typeHTTPRBAC         = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	typeHTTPRBACPerRoute = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	typeNetRBAC          = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
)

// maxRBACDepth bounds and/or/not nesting so a hostile config cannot make
// evaluation recurse without limit.
const maxRBACDepth = 64

// decodeHTTPRBAC decodes the HTTP RBAC filter config.
func decodeHTTPRBAC(a *anypb.Any) (*state.HTTPRBAC, error) {
	var r httprbacv3.RBAC
	if err := a.UnmarshalTo(&r); err != nil {
		return nil, err
	}
	return httpRBAC(&r)
}

func httpRBAC(r *httprbacv3.RBAC) (*state.HTTPRBAC, error) {
	if r.GetMatcher() != nil {
		return nil, errAt("matcher", "is not supported (use rules)")
	}
	if r.GetShadowMatcher() != nil {
		return nil, errAt("shadow_matcher", "is not supported (use shadow_rules)")
	}
	out := &state.HTTPRBAC{RulesStatPrefix: r.GetRulesStatPrefix(), ShadowRulesStatPrefix: r.GetShadowRulesStatPrefix()}
	var err error
	if out.Rules, err = decodeRBACRules(r.GetRules()); err != nil {
		return nil, at("rules", err)
	}
	if out.ShadowRules, err = decodeRBACRules(r.GetShadowRules()); err != nil {
		return nil, at("shadow_rules", err)
	}
	return out, nil
}

// decodeHTTPRBACPerRoute decodes RBACPerRoute. Without rbac the filter is
// disabled on the route (Envoy: "If absent, the global RBAC policy will be
// disabled for this route").
func decodeHTTPRBACPerRoute(a *anypb.Any) (*state.FilterOverride, error) {
	var r httprbacv3.RBACPerRoute
	if err := a.UnmarshalTo(&r); err != nil {
		return nil, err
	}
	if r.GetRbac() == nil {
		return &state.FilterOverride{Disabled: true}, nil
	}
	v, err := httpRBAC(r.GetRbac())
	if err != nil {
		return nil, at("rbac", err)
	}
	return &state.FilterOverride{RBAC: v}, nil
}

// decodeNetworkRBAC decodes the network RBAC filter config.
func decodeNetworkRBAC(a *anypb.Any) (*state.NetworkRBAC, error) {
	var r netrbacv3.RBAC
	if err := a.UnmarshalTo(&r); err != nil {
		return nil, err
	}
	if r.GetStatPrefix() == "" {
		return nil, errAt("stat_prefix", "is required")
	}
	if r.GetMatcher() != nil {
		return nil, errAt("matcher", "is not supported (use rules)")
	}
	if r.GetShadowMatcher() != nil {
		return nil, errAt("shadow_matcher", "is not supported (use shadow_rules)")
	}
	if r.GetDelayDeny() != nil {
		return nil, errAt("delay_deny", "is not supported")
	}
	out := &state.NetworkRBAC{
		StatPrefix: r.GetStatPrefix(),
		Continuous: r.GetEnforcementType() == netrbacv3.RBAC_CONTINUOUS,
	}
	var err error
	if out.Rules, err = decodeRBACRules(r.GetRules()); err != nil {
		return nil, at("rules", err)
	}
	if out.ShadowRules, err = decodeRBACRules(r.GetShadowRules()); err != nil {
		return nil, at("shadow_rules", err)
	}
	return out, nil
}

// decodeRBACRules decodes envoy.config.rbac.v3.RBAC; nil stays nil (no
// enforcement). Policies are sorted by name, Envoy's evaluation order.
func decodeRBACRules(r *rbacv3.RBAC) (*state.RBACRules, error) {
	if r == nil {
		return nil, nil
	}
	out := &state.RBACRules{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		out.Action = state.RBACAllow
	case rbacv3.RBAC_DENY:
		out.Action = state.RBACDeny
	case rbacv3.RBAC_LOG:
		out.Action = state.RBACLog
	default:
		return nil, errAt("action", "%v is not supported", r.GetAction())
	}
	if len(r.GetAuditLoggingOptions().GetLoggerConfigs()) > 0 {
		return nil, errAt("audit_logging_options", "is not supported")
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p, err := decodeRBACPolicy(n, r.GetPolicies()[n])
		if err != nil {
			return nil, at(fmt.Sprintf("policies[%q]", n), err)
		}
		out.Policies = append(out.Policies, p)
	}
	return out, nil
}

func decodeRBACPolicy(name string, p *rbacv3.Policy) (state.RBACPolicy, error) {
	out := state.RBACPolicy{Name: name}
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil || p.GetCelConfig() != nil {
		return out, errAt("condition", "CEL conditions are not supported")
	}
	if len(p.GetPermissions()) == 0 {
		return out, errAt("permissions", "at least one permission is required")
	}
	if len(p.GetPrincipals()) == 0 {
		return out, errAt("principals", "at least one principal is required")
	}
	for i, perm := range p.GetPermissions() {
		v, err := decodePermission(perm, 0)
		if err != nil {
			return out, atIndex("permissions", i, err)
		}
		out.Permissions = append(out.Permissions, v)
	}
	for i, pr := range p.GetPrincipals() {
		v, err := decodePrincipal(pr, 0)
		if err != nil {
			return out, atIndex("principals", i, err)
		}
		out.Principals = append(out.Principals, v)
	}
	return out, nil
}

func decodePermission(p *rbacv3.Permission, depth int) (state.Permission, error) {
	var out state.Permission
	if depth > maxRBACDepth {
		return out, fmt.Errorf("rules nested deeper than %d", maxRBACDepth)
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return out, errAt("any", "must be true")
		}
		out.Kind = state.PermAny
	case *rbacv3.Permission_AndRules, *rbacv3.Permission_OrRules:
		field, set := "and_rules", p.GetAndRules()
		out.Kind = state.PermAnd
		if p.GetOrRules() != nil {
			field, set = "or_rules", p.GetOrRules()
			out.Kind = state.PermOr
		}
		rules, err := decodeRBACSet(field, "rules", "rule", set.GetRules(), depth, decodePermission)
		if err != nil {
			return out, err
		}
		out.Rules = rules
	case *rbacv3.Permission_NotRule:
		v, err := decodePermission(r.NotRule, depth+1)
		if err != nil {
			return out, at("not_rule", err)
		}
		out.Kind, out.Not = state.PermNot, &v
	case *rbacv3.Permission_Header:
		h, err := decodeHeaderMatcher(r.Header)
		if err != nil {
			return out, at("header", err)
		}
		out.Kind, out.Header = state.PermHeader, &h
	case *rbacv3.Permission_UrlPath:
		m, err := decodePathMatcher(r.UrlPath)
		if err != nil {
			return out, at("url_path", err)
		}
		out.Kind, out.String = state.PermURLPath, m
	case *rbacv3.Permission_DestinationIp:
		c, err := cidrRange(r.DestinationIp)
		if err != nil {
			return out, at("destination_ip", err)
		}
		out.Kind, out.CIDR = state.PermDestinationIP, c
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return out, errAt("destination_port", "%d is out of range", r.DestinationPort)
		}
		out.Kind, out.Port = state.PermDestinationPort, r.DestinationPort
	case *rbacv3.Permission_DestinationPortRange:
		s, e := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if s < 0 || e > 65536 || s >= e {
			return out, errAt("destination_port_range", "[%d, %d) is not a valid port range", s, e)
		}
		out.Kind, out.PortStart, out.PortEnd = state.PermDestinationPortRange, uint32(s), uint32(e)
	case *rbacv3.Permission_RequestedServerName:
		m, err := decodeStringMatcher(r.RequestedServerName)
		if err != nil {
			return out, at("requested_server_name", err)
		}
		out.Kind, out.String = state.PermServerName, &m
	case *rbacv3.Permission_Metadata:
		return out, errAt("metadata", "is not supported")
	case *rbacv3.Permission_Matcher:
		return out, errAt("matcher", "is not supported")
	case *rbacv3.Permission_UriTemplate:
		return out, errAt("uri_template", "is not supported")
	case *rbacv3.Permission_SourcedMetadata:
		return out, errAt("sourced_metadata", "is not supported")
	case nil:
		return out, errors.New("rule is required")
	default:
		return out, fmt.Errorf("rule %T is not supported", r)
	}
	return out, nil
}

func decodePrincipal(p *rbacv3.Principal, depth int) (state.Principal, error) {
	var out state.Principal
	if depth > maxRBACDepth {
		return out, fmt.Errorf("ids nested deeper than %d", maxRBACDepth)
	}
	var err error
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return out, errAt("any", "must be true")
		}
		out.Kind = state.PrincipalAny
	case *rbacv3.Principal_AndIds, *rbacv3.Principal_OrIds:
		field, set := "and_ids", p.GetAndIds()
		out.Kind = state.PrincipalAnd
		if p.GetOrIds() != nil {
			field, set = "or_ids", p.GetOrIds()
			out.Kind = state.PrincipalOr
		}
		ids, err := decodeRBACSet(field, "ids", "id", set.GetIds(), depth, decodePrincipal)
		if err != nil {
			return out, err
		}
		out.IDs = ids
	case *rbacv3.Principal_NotId:
		v, err := decodePrincipal(id.NotId, depth+1)
		if err != nil {
			return out, at("not_id", err)
		}
		out.Kind, out.Not = state.PrincipalNot, &v
	case *rbacv3.Principal_Authenticated_:
		out.Kind = state.PrincipalAuthenticated
		if n := id.Authenticated.GetPrincipalName(); n != nil {
			m, err := decodeStringMatcher(n)
			if err != nil {
				return out, at("authenticated.principal_name", err)
			}
			out.Name = &m
		}
	case *rbacv3.Principal_SourceIp:
		out.Kind = state.PrincipalSourceIP
		if out.CIDR, err = cidrRange(id.SourceIp); err != nil {
			return out, at("source_ip", err)
		}
	case *rbacv3.Principal_DirectRemoteIp:
		out.Kind = state.PrincipalDirectRemoteIP
		if out.CIDR, err = cidrRange(id.DirectRemoteIp); err != nil {
			return out, at("direct_remote_ip", err)
		}
	case *rbacv3.Principal_RemoteIp:
		out.Kind = state.PrincipalRemoteIP
		if out.CIDR, err = cidrRange(id.RemoteIp); err != nil {
			return out, at("remote_ip", err)
		}
	case *rbacv3.Principal_Header:
		h, err := decodeHeaderMatcher(id.Header)
		if err != nil {
			return out, at("header", err)
		}
		out.Kind, out.Header = state.PrincipalHeader, &h
	case *rbacv3.Principal_UrlPath:
		m, err := decodePathMatcher(id.UrlPath)
		if err != nil {
			return out, at("url_path", err)
		}
		out.Kind, out.Name = state.PrincipalURLPath, m
	case *rbacv3.Principal_Metadata:
		return out, errAt("metadata", "is not supported")
	case *rbacv3.Principal_FilterState:
		return out, errAt("filter_state", "is not supported")
	case *rbacv3.Principal_SourcedMetadata:
		return out, errAt("sourced_metadata", "is not supported")
	case *rbacv3.Principal_Custom:
		return out, errAt("custom", "is not supported")
	case nil:
		return out, errors.New("identifier is required")
	default:
		return out, fmt.Errorf("identifier %T is not supported", id)
	}
	return out, nil
}

func decodePathMatcher(p *matcherv3.PathMatcher) (*state.StringMatcher, error) {
	if p.GetPath() == nil {
		return nil, errAt("path", "is required")
	}
	m, err := decodeStringMatcher(p.GetPath())
	if err != nil {
		return nil, at("path", err)
	}
	return &m, nil
}

// decodePathNormalization reads normalize_path, merge_slashes and
// path_with_escaped_slashes_action. Envoy's defaults: normalize_path false
// (runtime http_connection_manager.normalize_path), merge_slashes false,
// escaped slashes kept (IMPLEMENTATION_SPECIFIC_DEFAULT).
func decodePathNormalization(h *hcmv3.HttpConnectionManager) (state.PathNormalization, error) {
	out := state.PathNormalization{
		NormalizePath: h.GetNormalizePath().GetValue(),
		MergeSlashes:  h.GetMergeSlashes(),
	}
	if h.GetPathNormalizationOptions() != nil {
		return out, errAt("path_normalization_options", "is not supported")
	}
	switch a := h.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		out.EscapedSlashes = state.KeepEscapedSlashes
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		out.EscapedSlashes = state.RejectEscapedSlashes
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		out.EscapedSlashes = state.UnescapeAndRedirect
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		out.EscapedSlashes = state.UnescapeAndForward
	default:
		return out, errAt("path_with_escaped_slashes_action", "%v is not supported", a)
	}
	return out, nil
}

// decodeRBACSet decodes the members of an and/or set of permissions
// (field.rules) or principals (field.ids) one level deeper; the set must not
// be empty.
func decodeRBACSet[P, S any](field, list, noun string, items []P, depth int, decode func(P, int) (S, error)) ([]S, error) {
	if len(items) == 0 {
		return nil, errAt(field+"."+list, "at least one %s is required", noun)
	}
	out := make([]S, 0, len(items))
	for i, sub := range items {
		v, err := decode(sub, depth+1)
		if err != nil {
			return nil, at(field, atIndex(list, i, err))
		}
		out = append(out, v)
	}
	return out, nil
}
