package cab

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestBenchREADME: the rows the README's Performance section names, in
// backquotes, are rows bench/bench.sh runs by default, and the switches it
// names (BENCH_ONLY, CEILING=0) are ones the script reads.
func TestBenchREADME(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("bench/bench.sh")
	if err != nil {
		t.Fatal(err)
	}
	perf := string(readme)
	i := strings.Index(perf, "\n## Performance")
	if i < 0 {
		t.Fatal("README.md has no Performance section")
	}
	perf = perf[i:]
	if j := strings.Index(perf[1:], "\n## "); j >= 0 {
		perf = perf[:j+1]
	}
	def := regexp.MustCompile(`(?m)^ONLY=\$\{BENCH_ONLY:-([^}]*)\}`).FindStringSubmatch(string(script))
	if def == nil {
		t.Fatal("bench/bench.sh sets no default ONLY=${BENCH_ONLY:-...}")
	}
	rows := map[string]bool{}
	for _, r := range strings.Fields(def[1]) {
		rows[r] = true
	}
	named := 0
	for _, m := range regexp.MustCompile("`((?:vxlan|cab-[a-z]+|fastd|openvpn)(?:-9000)?)`").FindAllStringSubmatch(perf, -1) {
		named++
		if !rows[m[1]] {
			t.Errorf("README names the bench row %q, which bench/bench.sh does not run (%s)", m[1], def[1])
		}
	}
	if named < 3 {
		t.Errorf("the Performance section names %d bench rows, want the -9000 rows at least", named)
	}
	for _, v := range []string{"CEILING", "BENCH_ONLY"} {
		if strings.Contains(perf, v+"=") && !strings.Contains(string(script), "${"+v+":-") {
			t.Errorf("README names %s=, which bench/bench.sh does not read", v)
		}
	}
}
