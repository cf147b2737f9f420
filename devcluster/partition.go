package devcluster

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
)

// cutComment tags the iptables rules of Cut, for an operator reading a
// host's rules: "gwd-cut CLUSTER".
const cutComment = "gwd-cut "

// Cut cuts the link between hosts a and b, both ways, as a broken switch
// port or a partition between two nodes would: every packet between
// their two addresses is dropped silently (iptables DROP in each host's
// namespace, on INPUT and OUTPUT), so that connections between them hang
// rather than fail, and new ones time out. Both still reach the root
// namespace (where tests and drivers run) and every other host. Heal
// undoes it; cutting a cut pair again changes nothing. The rules go with
// the hosts' namespaces when the cluster closes.
//
// It cuts what the two hosts send each other from their own addresses
// (agents' calls and data connections); packets they forward for
// containers, which carry other addresses, still pass.
func (c *Cluster) Cut(ctx context.Context, a, b *Host) error {
	if err := c.checkPair(a, b); err != nil {
		return err
	}
	for _, r := range c.cutRules(a, b) {
		if r.present(ctx) {
			continue
		}
		if _, err := r.host.Exec(ctx, r.args("-I")...); err != nil {
			return fmt.Errorf("cut the link between hosts %s and %s: %w", a.name, b.name, err)
		}
	}
	c.log.Info("link cut", "a", a.name, "b", b.name)
	return nil
}

// Heal restores the link between hosts a and b that Cut cut; healing a
// link that is not cut changes nothing.
func (c *Cluster) Heal(ctx context.Context, a, b *Host) error {
	if err := c.checkPair(a, b); err != nil {
		return err
	}
	var errs []error
	for _, r := range c.cutRules(a, b) {
		for r.present(ctx) {
			if _, err := r.host.Exec(ctx, r.args("-D")...); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("heal the link between hosts %s and %s: %w", a.name, b.name, err)
	}
	c.log.Info("link healed", "a", a.name, "b", b.name)
	return nil
}

func (c *Cluster) checkPair(a, b *Host) error {
	switch {
	case a == nil || b == nil:
		return errors.New("cut a link: name two hosts")
	case a == b:
		return fmt.Errorf("cut a link: host %s twice; a link joins two hosts", a.name)
	case a.cluster != c || b.cluster != c:
		return fmt.Errorf("cut a link: hosts %s and %s are not both of cluster %s", a.name, b.name, c.name)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("cutting a link takes iptables: install it: %w", err)
	}
	return nil
}

// cutRule is one iptables rule of a cut, in host's namespace.
type cutRule struct {
	host *Host
	spec []string // chain and match, without the command
}

// cutRules are a cut's rules: each host drops what comes from the other
// and what it would send there.
func (c *Cluster) cutRules(a, b *Host) []cutRule {
	var rules []cutRule
	for _, pair := range [][2]*Host{{a, b}, {b, a}} {
		h, peer := pair[0], pair[1]
		for _, m := range [][2]string{{"INPUT", "-s"}, {"OUTPUT", "-d"}} {
			rules = append(rules, cutRule{host: h, spec: []string{m[0], m[1], peer.addr.String() + "/32",
				"-m", "comment", "--comment", cutComment + c.name, "-j", "DROP"}})
		}
	}
	return rules
}

// args is the iptables command line that applies command (-I, -D, -C) to
// the rule; -w waits for the xtables lock that CRIU's network lock and
// other tests may hold.
func (r cutRule) args(command string) []string {
	return append([]string{"iptables", "-w", command}, r.spec...)
}

// present reports whether the rule is in its host's table.
func (r cutRule) present(ctx context.Context) bool {
	_, err := r.host.Exec(ctx, r.args("-C")...)
	return err == nil
}
