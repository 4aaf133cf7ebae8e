package initboot

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The hand-written JSON must agree with encoding/json, which the readers
// of booted.json and the writers of origin.json use.

func TestMarshalMatchesEncodingJSON(t *testing.T) {
	recs := []*BootRecord{
		{},
		{Mode: "pid1", Digest: digestA, Arg: `composefs=?` + digestA, Insecure: true, Device: "/dev/disk with \"quotes\"\\",
			StateRoot: "ctl\x01\x1f\t\n\u2028 é \xff end", Init: "/sbin/init",
			Timings: Timing{InitStart: 2345.678, SinceKernel: 1e-3, SinceInit: 123456789.125, Own: 0,
				Steps: []StepTime{{"api-mounts", 1.5}, {"modules", 700}}}},
		{Mode: "setup-root", Timings: Timing{Steps: []StepTime{}}},
	}
	for i, r := range recs {
		want, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		got := r.marshal()
		if string(got) != string(want) {
			// encoding/json escapes <, >, & and U+2028 as \u00XX forms
			// for HTML; both read back the same, which is what counts.
			var a, b BootRecord
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("record %d: own output is not JSON: %v\n%s", i, err, got)
			}
			json.Unmarshal(want, &b)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
			}
		}
	}
}

var jsonObjectCases = []string{
	`{"stateroot": "fedora"}`,
	` {"image":"x","stateroot":"a\"b\\c\/d\u00e9\ud83d\ude00\n", "n": [1, -2.5e+3, {"x": [true, false, null]}, "s"]} `,
	`{"stateroot": "first", "stateroot": "last"}`,
	`{}`,
	`{"other": {"stateroot": "nested"}}`,
	`{"stateroot": "\ud800 lone", "x": "\udc00"}`,
	`{"stateroot": "raw é and bad \xff"}`,
	`{"stateroot": 3}`,
	`{"stateroot": null}`,
	`{"stateroot": "a",}`,
	`{"stateroot": "a"`,
	`{"stateroot" "a"}`,
	`{"a": 01}`,
	`{"a": 1.}`,
	`{"a": -}`,
	`{"a": tru}`,
	`{"a": "ctl` + "\x01" + `"}`,
	`{"a": "\x"}`,
	`["stateroot"]`,
	`{"a": [1 2]}`,
	`{} {}`,
	``,
	`"x"`,
}

func TestJSONObjectString(t *testing.T) {
	for _, in := range jsonObjectCases {
		checkAgainstEncodingJSON(t, []byte(in))
	}
}

func FuzzJSONObjectString(f *testing.F) {
	for _, in := range jsonObjectCases {
		f.Add([]byte(in))
	}
	f.Fuzz(checkAgainstEncodingJSON)
}

func checkAgainstEncodingJSON(t *testing.T, in []byte) {
	got, found, err := jsonObjectString(in, "stateroot")
	var ref map[string]json.RawMessage
	refErr := json.Unmarshal(in, &ref)
	if refErr == nil && ref == nil {
		refErr = errNull // "null" is valid JSON but not an object
	}
	var want string
	wantFound := false
	if raw, ok := ref["stateroot"]; refErr == nil && ok {
		if e := json.Unmarshal(raw, &want); e != nil || string(raw) == "null" {
			refErr = e
			if refErr == nil {
				refErr = errNull
			}
		}
		wantFound = true
	}
	switch {
	case (err == nil) != (refErr == nil):
		t.Errorf("%q: error %v, encoding/json says %v", in, err, refErr)
	case err == nil && (got != want || found != wantFound):
		t.Errorf("%q: got %q (found %v), encoding/json %q (found %v)", in, got, found, want, wantFound)
	}
}

var errNull = jsonNullError{}

type jsonNullError struct{}

func (jsonNullError) Error() string { return "null" }
