package bench

import "testing"

// TestCompareWithTwoBaselines: a second baseline gets a row of its own
// and neither comparison is lost.
func TestCompareWithTwoBaselines(t *testing.T) {
	r := NewReport("test", 1)
	for _, v := range []float64{9, 10, 11} {
		r.Add("loom", "Gbit/s", v)
		r.Add("hand", "Gbit/s", 2*v)
		r.Add("hand+ct", "Gbit/s", v*10/8)
	}
	r.Compare("loom", "hand", "≥ 0.97")
	r.Compare("loom", "hand+ct", "")
	r.finish()
	if f := r.byName["loom"]; f.Baseline != "hand" || f.Ratio != 0.5 || f.Target != "≥ 0.97" {
		t.Errorf("loom: %+v", f)
	}
	if f := r.byName["loom, against hand+ct"]; f == nil || f.Baseline != "hand+ct" || f.Ratio != 0.8 || f.Median != 10 {
		t.Errorf("second comparison: %+v", f)
	}
}
