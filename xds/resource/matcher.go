//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshlet/meshlet/state"
)

// maxRegexLen bounds configured regexes; Go's RE2 is linear-time, but a
// huge program still costs memory per compiled route.
const maxRegexLen = 4096

// compileFullRegex compiles an Envoy safe_regex, which must match the whole
// input, so it is anchored.
func compileFullRegex(r *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if r == nil {
		return nil, errors.New("regex is required")
	}
	if len(r.GetRegex()) > maxRegexLen {
		return nil, errAt("regex", "longer than %d bytes", maxRegexLen)
	}
	re, err := regexp.Compile("^(?:" + r.GetRegex() + ")$")
	if err != nil {
		// Re-compile unanchored so the message quotes the user's pattern.
		if _, err2 := regexp.Compile(r.GetRegex()); err2 != nil {
			err = err2
		}
		return nil, errAt("regex", "%v", err)
	}
	return re, nil
}

// compileSearchRegex compiles a regex used for search-and-replace
// (regex_rewrite), which is not anchored.
func compileSearchRegex(r *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if r == nil {
		return nil, errors.New("regex is required")
	}
	if len(r.GetRegex()) > maxRegexLen {
		return nil, errAt("regex", "longer than %d bytes", maxRegexLen)
	}
	re, err := regexp.Compile(r.GetRegex())
	if err != nil {
		return nil, errAt("regex", "%v", err)
	}
	return re, nil
}

func decodeStringMatcher(m *matcherv3.StringMatcher) (state.StringMatcher, error) {
	out := state.StringMatcher{IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Kind, out.Value = state.StringExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		if p.Prefix == "" {
			return out, errAt("prefix", "must not be empty")
		}
		out.Kind, out.Value = state.StringPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		if p.Suffix == "" {
			return out, errAt("suffix", "must not be empty")
		}
		out.Kind, out.Value = state.StringSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		if p.Contains == "" {
			return out, errAt("contains", "must not be empty")
		}
		out.Kind, out.Value = state.StringContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileFullRegex(p.SafeRegex)
		if err != nil {
			return out, at("safe_regex", err)
		}
		if out.IgnoreCase {
			return out, errAt("ignore_case", "has no effect on safe_regex; use (?i) in the pattern")
		}
		out.Kind, out.Regex = state.StringRegex, re
	case *matcherv3.StringMatcher_Custom:
		return out, errAt("custom", "custom string matchers are not supported")
	default:
		return out, errors.New("match_pattern is required")
	}
	if out.IgnoreCase {
		// Matching compares lower-cased input, so fold the value once here.
		out.Value = strings.ToLower(out.Value)
	}
	return out, nil
}

func decodeHeaderMatcher(h *routev3.HeaderMatcher) (state.HeaderMatcher, error) {
	out := state.HeaderMatcher{
		Name:                strings.ToLower(h.GetName()),
		Invert:              h.GetInvertMatch(),
		TreatMissingAsEmpty: h.GetTreatMissingHeaderAsEmpty(),
	}
	if out.Name == "" {
		return out, errAt("name", "is required")
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		out.Kind, out.String = state.HeaderExact, state.StringMatcher{Kind: state.StringExact, Value: s.ExactMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileFullRegex(s.SafeRegexMatch)
		if err != nil {
			return out, at("safe_regex_match", err)
		}
		out.Kind, out.String = state.HeaderRegex, state.StringMatcher{Kind: state.StringRegex, Regex: re}
	case *routev3.HeaderMatcher_RangeMatch:
		r := s.RangeMatch
		if r.GetStart() >= r.GetEnd() {
			return out, errAt("range_match", "start %d must be less than end %d", r.GetStart(), r.GetEnd())
		}
		out.Kind, out.RangeStart, out.RangeEnd = state.HeaderRange, r.GetStart(), r.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = state.HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		if s.PrefixMatch == "" {
			return out, errAt("prefix_match", "must not be empty")
		}
		out.Kind, out.String = state.HeaderPrefix, state.StringMatcher{Kind: state.StringPrefix, Value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		if s.SuffixMatch == "" {
			return out, errAt("suffix_match", "must not be empty")
		}
		out.Kind, out.String = state.HeaderSuffix, state.StringMatcher{Kind: state.StringSuffix, Value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		if s.ContainsMatch == "" {
			return out, errAt("contains_match", "must not be empty")
		}
		out.Kind, out.String = state.HeaderContains, state.StringMatcher{Kind: state.StringContains, Value: s.ContainsMatch}
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := decodeStringMatcher(s.StringMatch)
		if err != nil {
			return out, at("string_match", err)
		}
		out.Kind, out.String = state.HeaderString, sm
	case nil:
		// Envoy: with no specifier the header only has to be present.
		out.Kind, out.Present = state.HeaderPresent, true
	default:
		return out, fmt.Errorf("header_match_specifier %T is not supported", s)
	}
	return out, nil
}

func decodeQueryParamMatcher(q *routev3.QueryParameterMatcher) (state.QueryParamMatcher, error) {
	out := state.QueryParamMatcher{Name: q.GetName()}
	if out.Name == "" {
		return out, errAt("name", "is required")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := decodeStringMatcher(s.StringMatch)
		if err != nil {
			return out, at("string_match", err)
		}
		out.String = &sm
	case *routev3.QueryParameterMatcher_PresentMatch:
		out.Present = s.PresentMatch
	case nil:
		// Envoy treats a matcher without a specifier as a presence check.
		out.Present = true
	}
	return out, nil
}
