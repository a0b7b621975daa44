package xds

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	lo := func(int64) int64 { return 0 }
	hi := func(n int64) int64 { return n - 1 }
	tests := []struct {
		name     string
		b        Backoff
		attempt  int
		min, max time.Duration
	}{
		{"defaults first", Backoff{}, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{"doubles", Backoff{}, 3, 400 * time.Millisecond, 800 * time.Millisecond},
		{"capped", Backoff{}, 40, 5 * time.Second, 10 * time.Second},
		{"custom", Backoff{Base: time.Second, Max: 3 * time.Second}, 1, time.Second, 2 * time.Second},
		{"max below base", Backoff{Base: time.Second, Max: time.Millisecond}, 5, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.delay(tt.attempt, lo); got != tt.min {
				t.Errorf("lowest delay = %v, want %v", got, tt.min)
			}
			if got := tt.b.delay(tt.attempt, hi); got != tt.max {
				t.Errorf("highest delay = %v, want %v", got, tt.max)
			}
			for range 100 {
				if got := tt.b.delay(tt.attempt, randInt63n); got < tt.min || got > tt.max {
					t.Fatalf("delay = %v outside [%v, %v]", got, tt.min, tt.max)
				}
			}
		})
	}
}
