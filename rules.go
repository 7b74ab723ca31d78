package oauth2jwt

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4/json"
)

// Requirement is one authorization rule on a verified token. Exactly one
// of Scopes, Claim or Any is set. A failed requirement answers 403.
type Requirement struct {
	// Every listed scope must be granted: scopes are read from the
	// `scope` claim (space-separated, RFC 8693/9068) and the `scp` claim
	// (a space-separated string or an array, as Entra ID and Okta issue).
	Scopes []string `json:"scopes,omitempty"`

	// A claim, by name or dotted path (as the placeholders look it up),
	// that must equal one of Values, or, when the claim is an array,
	// contain one of them.
	Claim string `json:"claim,omitempty"`

	// The accepted values of Claim.
	Values []string `json:"values,omitempty"`

	// A group of requirements of which at least one must hold.
	Any []Requirement `json:"any,omitempty"`
}

// check validates a requirement; path names it in errors.
func (q *Requirement) check(path string) error {
	set := 0
	if len(q.Scopes) > 0 {
		set++
	}
	if q.Claim != "" {
		set++
	}
	if len(q.Any) > 0 {
		set++
	}
	if set != 1 {
		return fmt.Errorf("%s: exactly one of scopes, claim or any must be set", path)
	}
	for _, s := range q.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			return fmt.Errorf("%s: scopes: %q is not a valid scope token", path, s)
		}
	}
	if q.Claim != "" && len(q.Values) == 0 {
		return fmt.Errorf("%s: claim %q: at least one value is required", path, q.Claim)
	}
	if q.Claim == "" && len(q.Values) > 0 {
		return fmt.Errorf("%s: values: set without claim", path)
	}
	for i := range q.Any {
		if err := q.Any[i].check(fmt.Sprintf("%s.any[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// scopesOf collects every scope named by the requirements, for the
// scope attribute of the insufficient_scope challenge.
func scopesOf(reqs []Requirement, into []string) []string {
	for _, q := range reqs {
		for _, s := range q.Scopes {
			dup := false
			for _, have := range into {
				if have == s {
					dup = true
					break
				}
			}
			if !dup {
				into = append(into, s)
			}
		}
		into = scopesOf(q.Any, into)
	}
	return into
}

// satisfied reports whether the claims meet every requirement.
func satisfied(reqs []Requirement, c *Claims) bool {
	var granted []string // computed once, on first use
	var grantedDone bool
	for i := range reqs {
		if !reqs[i].holds(c, &granted, &grantedDone) {
			return false
		}
	}
	return true
}

func (q *Requirement) holds(c *Claims, granted *[]string, done *bool) bool {
	switch {
	case len(q.Scopes) > 0:
		if !*done {
			*granted = grantedScopes(c)
			*done = true
		}
		for _, want := range q.Scopes {
			found := false
			for _, g := range *granted {
				if g == want {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	case q.Claim != "":
		raw, ok := c.lookup(q.Claim)
		if !ok || len(raw) == 0 {
			return false
		}
		items := []json.RawMessage{raw}
		if raw[0] == '[' {
			// A fresh slice: decoding into items (which holds raw) would
			// overwrite the signed payload in place.
			if items, ok = arrayItems(raw); !ok {
				return false
			}
		}
		for _, it := range items {
			v, ok := scalarText(it)
			if !ok {
				continue // objects and nested arrays never match
			}
			for _, want := range q.Values {
				if v == want {
					return true
				}
			}
		}
		return false
	case len(q.Any) > 0:
		for i := range q.Any {
			if q.Any[i].holds(c, granted, done) {
				return true
			}
		}
		return false
	}
	return false
}

// scalarText is the text a string, number or boolean compares by.
func scalarText(v json.RawMessage) (string, bool) {
	if len(v) == 0 {
		return "", false
	}
	switch v[0] {
	case '"':
		return jsonString(v)
	case '{', '[', 'n':
		return "", false
	}
	return formatNumberOrBool(v), true
}

// grantedScopes returns the scopes of the `scope` and `scp` claims.
func grantedScopes(c *Claims) []string {
	var out []string
	for _, name := range [...]string{"scope", "scp"} {
		raw, ok := c.member(name)
		if !ok || len(raw) == 0 {
			continue
		}
		if raw[0] == '"' {
			s, _ := jsonString(raw)
			out = append(out, strings.Fields(s)...)
			continue
		}
		if raw[0] == '[' && name == "scp" {
			for _, s := range c.Strings(name) {
				out = append(out, strings.Fields(s)...)
			}
		}
	}
	return out
}

var errForbidden = &authError{step: stepRequire, reason: reasonForbidden, detail: "a require rule failed"}

// errNoRequirementKind is returned by the Caddyfile parser.
var errNoRequirementKind = errors.New("require: expected scope, claim or any")
