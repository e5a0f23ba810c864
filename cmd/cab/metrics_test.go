package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestREADMEMetrics: the README names every metric as --metrics serves it,
// and no metric that it does not serve.
func TestREADMEMetrics(t *testing.T) {
	ch := make(chan *prometheus.Desc, 64)
	newStatusCollector(nil).Describe(ch)
	close(ch)
	var served []string
	for d := range ch {
		if m := regexp.MustCompile(`fqName: "([a-z_]+)"`).FindStringSubmatch(d.String()); m != nil {
			served = append(served, m[1])
		}
	}
	if len(served) < 10 {
		t.Fatalf("found only %d metrics: %v", len(served), served)
	}
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(`\bcab_[a-z_]+`).FindAllString(string(b), -1)
	for _, n := range named {
		if !slices.ContainsFunc(served, func(s string) bool { return s == n || strings.HasSuffix(n, "_") && strings.HasPrefix(s, n) }) {
			t.Errorf("the README names %s, which --metrics does not serve", n)
		}
	}
	for _, s := range served {
		if !slices.Contains(named, s) {
			t.Errorf("the README does not name %s", s)
		}
	}
}
