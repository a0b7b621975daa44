package xds

import (
	"google.golang.org/protobuf/proto"
)

// Redact replaces, in place, every field of m marked sensitive
// (udpa.annotations.sensitive: private keys, passwords), looking inside
// nested Any values, the way ConfigDump does for pushed resources. Callers
// dumping configuration that did not come over xDS (the bootstrap's static
// resources) use it on a clone.
func Redact(m proto.Message) {
	if m != nil {
		redact(m.ProtoReflect())
	}
}
