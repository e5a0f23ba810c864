package transporttest

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// CheckLeaks fails t if, when t's cleanups have run, a goroutine running
// cab's code is left that was not running when CheckLeaks was called. Call
// it first in a test, so that its check runs after every other cleanup
// (cleanups run last registered, first). It waits up to 5 s for goroutines
// that are on their way out.
func CheckLeaks(t testing.TB) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		var left []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			left = left[:0]
			for id, stack := range goroutines() {
				if _, old := before[id]; !old && strings.Contains(stack, "cab/") && !strings.Contains(stack, "transporttest.goroutines") {
					left = append(left, stack)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, s := range left {
			t.Errorf("goroutine left running:\n%s", s)
		}
	})
}

// goroutines returns the stack of every goroutine, by its id line.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		id, _, _ := bytes.Cut(g, []byte(" ["))
		m[string(id)] = string(g)
	}
	return m
}
