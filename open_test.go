package cab

import "testing"

func TestStableMAC(t *testing.T) {
	k1, k2 := mustKey(t).Public(), mustKey(t).Public()
	a, b := StableMAC(k1, "cab0"), StableMAC(k1, "cab0")
	if a.String() != b.String() {
		t.Fatal("not stable")
	}
	if StableMAC(k2, "cab0").String() == a.String() || StableMAC(k1, "cab1").String() == a.String() {
		t.Fatal("not distinct")
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Fatalf("%v is not a locally administered unicast MAC", a)
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":        "192.0.2.1:7667",
		"192.0.2.1:6666":   "192.0.2.1:6666",
		"2001:db8::1":      "[2001:db8::1]:7667",
		"[2001:db8::1]":    "[2001:db8::1]:7667",
		"[2001:db8::1]:66": "[2001:db8::1]:66",
		"example.net":      "example.net:7667",
	} {
		if got := WithDefaultPort(in); got != want {
			t.Errorf("WithDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}
