package authz

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/internal/pki"
)

// Policy maps the full gRPC method name of every RPC a server serves
// ("/godwit.v1.AgentService/RunContainer": the generated
// *_FullMethodName constants) to the roles that may call it. A method
// without an entry, or with no roles, may be called by nobody. Build one
// with NewPolicy; check it against the services it guards with Check.
type Policy map[string][]pki.Role

// Rule grants Roles the calls of Methods (full method names).
type Rule struct {
	Roles   []pki.Role
	Methods []string
}

// Grant is the rule that roles may call methods.
func Grant(roles []pki.Role, methods ...string) Rule {
	return Rule{Roles: slices.Clone(roles), Methods: methods}
}

// ReadOnly is the rule for methods that change nothing (list, inspect,
// logs, status): the viewer may call them, and so may the operator and
// the scheduler, which may call everything an operator's command does.
// Not for reads that hand out secrets (a checkpoint's memory, a snapshot
// of the cluster state): grant those with Operate.
func ReadOnly(methods ...string) Rule {
	return Grant([]pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleScheduler}, methods...)
}

// Operate is the rule for methods that change something, or read what a
// viewer must not see: the operator and the scheduler may call them.
func Operate(methods ...string) Rule {
	return Grant([]pki.Role{pki.RoleOperator, pki.RoleScheduler}, methods...)
}

// NewPolicy builds a policy from rules. A method in several rules may be
// called by the roles of each.
func NewPolicy(rules ...Rule) Policy {
	p := Policy{}
	for _, r := range rules {
		for _, m := range r.Methods {
			p.add(m, r.Roles...)
		}
	}
	return p
}

// Merge is the policy of a server that serves the services of all of
// policies (an agent with an embedded scheduler): a method in several
// may be called by the roles of each.
func Merge(policies ...Policy) Policy {
	out := Policy{}
	for _, p := range policies {
		for m, roles := range p {
			out.add(m, roles...)
		}
	}
	return out
}

func (p Policy) add(method string, roles ...pki.Role) {
	for _, r := range roles {
		if !slices.Contains(p[method], r) {
			p[method] = append(p[method], r)
		}
	}
	if _, ok := p[method]; !ok {
		p[method] = nil // named, with no role: nobody may call it
	}
}

// Authorize decides whether id may call method (a full method name). It
// returns nil, or a *DeniedError: one that wraps ErrNotInPolicy when the
// method has no roles in p, else ErrDenied. An unauthenticated identity
// (a plaintext caller) is denied everything: servers that serve
// plaintext do not call Authorize (see Options.Insecure).
func (p Policy) Authorize(id Identity, method string) error {
	roles := p[method]
	if id.Authenticated() && slices.Contains(roles, id.Role) {
		return nil
	}
	return &DeniedError{Caller: id, Method: method, Allowed: slices.Clone(roles)}
}

// Check reports how p fails to guard exactly the methods of services: a
// method of theirs that p gives no role, an entry of p that names no
// method of theirs (a typo, or an RPC since removed), and a role that is
// none of pki.Roles. Nil means every RPC has been given roles on purpose.
func (p Policy) Check(services ...*grpc.ServiceDesc) error {
	served := map[string]bool{}
	for _, sd := range services {
		for _, m := range sd.Methods {
			served["/"+sd.ServiceName+"/"+m.MethodName] = true
		}
		for _, s := range sd.Streams {
			served["/"+sd.ServiceName+"/"+s.StreamName] = true
		}
	}
	var errs []error
	for _, m := range slices.Sorted(maps.Keys(served)) {
		if len(p[m]) == 0 {
			errs = append(errs, fmt.Errorf("%s has no role in the policy: decide who may call it and add it", m))
		}
	}
	for _, m := range slices.Sorted(maps.Keys(p)) {
		if !served[m] {
			errs = append(errs, fmt.Errorf("the policy names %s, which none of the services has: remove it or correct its name", m))
		}
		for _, r := range p[m] {
			if !r.Valid() {
				errs = append(errs, fmt.Errorf("the policy gives %s to the unknown role %q", m, r))
			}
		}
	}
	return errors.Join(errs...)
}

// DeniedError is a call that the policy refused: Caller may not call
// Method (a full method name); Allowed are the roles that may, none when
// the method is not in the policy. Its message says which role to issue
// a certificate with.
type DeniedError struct {
	Caller  Identity
	Method  string
	Allowed []pki.Role
}

func (e *DeniedError) Error() string {
	short := e.Method[strings.LastIndex(e.Method, "/")+1:]
	if len(e.Allowed) == 0 {
		return fmt.Sprintf("%s cannot call %s: %s is not in the policy of this server, so no role may call it", e.Caller, short, e.Method)
	}
	allowed := byPreference(e.Allowed)
	return fmt.Sprintf("%s cannot call %s: it needs the %s role; issue a certificate with --role %s", e.Caller, short, orList(allowed), allowed[0])
}

// Is makes a DeniedError match ErrNotInPolicy or ErrDenied.
func (e *DeniedError) Is(target error) bool {
	if len(e.Allowed) == 0 {
		return target == ErrNotInPolicy
	}
	return target == ErrDenied
}

// rolePreference orders roles for advice: the one with the least power
// that suffices first, and people's roles before the daemons'.
var rolePreference = []pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleAgent, pki.RoleScheduler}

func byPreference(roles []pki.Role) []pki.Role {
	out := slices.Clone(roles)
	rank := func(r pki.Role) int {
		if i := slices.Index(rolePreference, r); i >= 0 {
			return i
		}
		return len(rolePreference)
	}
	slices.SortStableFunc(out, func(a, b pki.Role) int { return rank(a) - rank(b) })
	return out
}

// orList is "a", "a or b", "a, b or c".
func orList(roles []pki.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
