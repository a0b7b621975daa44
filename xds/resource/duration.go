package resource

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// duration converts a proto Duration, returning def when it is unset.
// Negative or out-of-range values are errors: Envoy rejects them and a
// negative timeout has no sensible meaning here.
func duration(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("invalid duration: %w", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, errors.New("duration must not be negative")
	}
	return v, nil
}

// durationField is duration with the error placed at the field path.
func durationField(path string, d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	v, err := duration(d, def)
	return v, at(path, err)
}
