package main

import (
	"encoding/json"
	"testing"
)

// Hostile request lines are JSON-RPC errors with the standard codes.
func TestParseRequestHostile(t *testing.T) {
	for _, tc := range []struct {
		line string
		code int
	}{
		{``, -32700},
		{`{`, -32700},
		{`[]`, -32700},
		{`"send"`, -32700},
		{`{"jsonrpc":"2.0","id":1,"method":"send","params":{`, -32700},
		{`{"id":1,"method":"send"}`, -32600},
		{`{"jsonrpc":"1.0","id":1,"method":"send"}`, -32600},
		{`{"jsonrpc":"2.0","id":1}`, -32600},
		{`{"jsonrpc":"2.0","id":1,"method":""}`, -32600},
		{`{"jsonrpc":"2.0","id":1,"method":"send","params":[1,2]}`, -32602},
		{`{"jsonrpc":"2.0","id":1,"method":"send","params":"x"}`, -32602},
		{`{"jsonrpc":"2.0","id":{"a":1},"method":7}`, -32700},
	} {
		_, err := parseRequest([]byte(tc.line))
		if err == nil || err.Code != tc.code {
			t.Errorf("%q: error %+v, want code %d", tc.line, err, tc.code)
		}
	}
	if req, err := parseRequest([]byte(`{"jsonrpc":"2.0","id":"x","method":"send","params":{"to":"@bob"}}`)); err != nil || req.Method != "send" {
		t.Errorf("valid request: %+v %+v", req, err)
	}
}

// An unknown method never reaches the account.
func TestCallUnknownMethod(t *testing.T) {
	d := &daemon{}
	var resp rpcResponse
	var e struct {
		Error rpcError `json:"error"`
	}
	b := d.call(t.Context(), []byte(`{"jsonrpc":"2.0","id":3,"method":"nope"}`))
	if err := json.Unmarshal(b, &resp); err != nil || string(resp.ID) != "3" {
		t.Fatalf("response %s: %v", b, err)
	}
	json.Unmarshal(b, &e)
	if e.Error.Code != -32601 {
		t.Errorf("code %d, want -32601", e.Error.Code)
	}
	if b := d.call(t.Context(), []byte(`{"jsonrpc":"2.0","method":"nope"}`)); b != nil {
		t.Errorf("a notification got a response: %s", b)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"@bob","text":"hi"}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"receive"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := parseRequest(line)
		if err == nil && (req.JSONRPC != "2.0" || req.Method == "") {
			t.Fatalf("accepted %q", line)
		}
		d := &daemon{}
		if err == nil && req.Method != "nope" {
			return // dispatching needs an account
		}
		d.call(t.Context(), line)
	})
}
