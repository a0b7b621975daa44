package resource

import (
	"fmt"
	"strings"
)

// fieldError carries the proto field path at which decoding failed. Paths
// are built inside out: each decoder wraps its callee's error with the field
// it was decoding, so the final message reads like a proto path
// ("filter_chains[0].filters[1].typed_config: ...").
type fieldError struct {
	path string
	err  error
}

func (e *fieldError) Error() string {
	if e.path == "" {
		return e.err.Error()
	}
	return e.path + ": " + e.err.Error()
}

func (e *fieldError) Unwrap() error { return e.err }

// at prefixes err's field path with seg. A nil err stays nil so callers can
// write `return at("x", decodeX(...))`.
func at(seg string, err error) error {
	if err == nil {
		return nil
	}
	if fe, ok := err.(*fieldError); ok {
		return &fieldError{path: joinPath(seg, fe.path), err: fe.err}
	}
	return &fieldError{path: seg, err: err}
}

// atIndex is at for a repeated field element: "name[i]".
func atIndex(name string, i int, err error) error {
	return at(fmt.Sprintf("%s[%d]", name, i), err)
}

func joinPath(seg, rest string) string {
	switch {
	case rest == "":
		return seg
	case seg == "":
		return rest
	case strings.HasPrefix(rest, "["):
		return seg + rest
	}
	return seg + "." + rest
}

// errAt returns an error for the field at path.
func errAt(path, format string, args ...any) error {
	return &fieldError{path: path, err: fmt.Errorf(format, args...)}
}
