package config

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
)

// protojson reports errors as "(line L:C): what" with no field path. To say
// which field is wrong we find the JSON token at that position and rebuild
// its path (static_resources.clusters[0].connect_timeout).
var protojsonPos = regexp.MustCompile(`\(line (\d+):(\d+)\):\s*`)

// describeProtojsonError returns "PATH: what" for a protojson error message,
// or the message without its "proto:" prefix when no position is given.
func describeProtojsonError(msg string, data []byte) string {
	msg = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(msg, "proto:"), "\u00a0"))
	m := protojsonPos.FindStringSubmatchIndex(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	what := strings.TrimSpace(msg[:m[0]] + msg[m[1]:])
	off := offsetOf(data, line, col)
	if p := jsonPathAt(data, off); p != "" {
		return p + ": " + what
	}
	return what
}

func offsetOf(data []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	// protojson columns count bytes from 1.
	return off + col - 1
}

type jsonFrame struct {
	object  bool
	key     string
	index   int
	wantKey bool
}

// jsonPathAt returns the field path of the JSON token covering offset off.
func jsonPathAt(data []byte, off int) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []jsonFrame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.object && !f.wantKey:
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			case !f.object:
				b.WriteString("[" + strconv.Itoa(f.index) + "]")
			}
		}
		return b.String()
	}
	valueDone := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].object {
				stack[n-1].wantKey = true
			} else {
				stack[n-1].index++
			}
		}
	}
	last := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			return last
		}
		end := int(dec.InputOffset())
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if s, ok := tok.(string); ok {
				stack[n-1].key, stack[n-1].wantKey = s, false
				last = path()
				if end > off {
					return last
				}
				continue
			}
		}
		last = path()
		if end > off {
			return last
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, jsonFrame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, jsonFrame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}
