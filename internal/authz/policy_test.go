package authz

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// servers are godwit's gRPC servers: the policy each enforces and the
// services it serves. A new service of godwit.v1 must be added here with
// its server's policy, or TestEveryRPCHasAPolicy fails.
var servers = []struct {
	name     string
	policy   Policy
	services []*grpc.ServiceDesc
}{
	{"agent", AgentPolicy(), []*grpc.ServiceDesc{&pb.AgentService_ServiceDesc}},
	{"scheduler", SchedulerPolicy(), []*grpc.ServiceDesc{&pb.ClusterService_ServiceDesc, &pb.NodeService_ServiceDesc}},
}

// protoPackage is the proto package of godwit's APIs.
const protoPackage = "godwit.v1"

// TestEveryRPCHasAPolicy walks every service of godwit.v1 registered by
// the generated code, so that a new service or a new RPC fails here until
// someone decides who may call it.
func TestEveryRPCHasAPolicy(t *testing.T) {
	guarded := map[string]bool{}
	for _, s := range servers {
		if err := s.policy.Check(s.services...); err != nil {
			t.Errorf("the %s's policy:\n%v", s.name, err)
		}
		for _, sd := range s.services {
			guarded[sd.ServiceName] = true
		}
	}
	found := 0
	protoregistry.GlobalFiles.RangeFilesByPackage(protoPackage, func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			found++
			if !guarded[string(sd.FullName())] {
				t.Errorf("service %s (%s) is served by no server of this test's table: add it with its server's policy", sd.FullName(), fd.Path())
			}
		}
		return true
	})
	if found == 0 {
		t.Fatalf("no service of %s is registered: the walk looked in the wrong place", protoPackage)
	}
}

func TestCheckFindsWhatThePolicyMisses(t *testing.T) {
	p := AgentPolicy()
	delete(p, pb.AgentService_RunContainer_FullMethodName)
	p[pb.AgentService_Exec_FullMethodName] = nil
	p["/godwit.v1.AgentService/RunContaner"] = []pki.Role{pki.RoleOperator}
	p[pb.AgentService_Logs_FullMethodName] = append(p[pb.AgentService_Logs_FullMethodName], "admin")
	err := p.Check(&pb.AgentService_ServiceDesc)
	if err == nil {
		t.Fatal("Check passed a policy with holes")
	}
	for _, want := range []string{
		pb.AgentService_RunContainer_FullMethodName + " has no role",
		pb.AgentService_Exec_FullMethodName + " has no role",
		"names /godwit.v1.AgentService/RunContaner, which none of the services has",
		`unknown role "admin"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check's error does not say %q:\n%v", want, err)
		}
	}
}

func TestAgentPolicy(t *testing.T) {
	p := AgentPolicy()
	all := pki.Roles()
	tests := []struct {
		method string
		// roles are exactly those that may call it.
		roles []pki.Role
	}{
		{pb.AgentService_NodeInfo_FullMethodName, all},
		{pb.AgentService_ListContainers_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator, pki.RoleViewer}},
		{pb.AgentService_InspectCheckpoint_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator, pki.RoleViewer}},
		{pb.AgentService_Logs_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator, pki.RoleViewer}},
		{pb.AgentService_RunContainer_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator}},
		{pb.AgentService_Exec_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator}},
		{pb.AgentService_ExportCheckpoint_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator}},
		{pb.AgentService_ImportCheckpoint_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleAgent, pki.RoleOperator}},
		{pb.AgentService_PushCheckpoint_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleOperator}},
		{pb.AgentService_MigrateDump_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleAgent, pki.RoleOperator}},
		{pb.AgentService_MigrateDescribe_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleAgent, pki.RoleOperator}},
		{pb.AgentService_MigrateCommit_FullMethodName, []pki.Role{pki.RoleScheduler, pki.RoleAgent, pki.RoleOperator}},
	}
	for _, tt := range tests {
		t.Run(tt.method[strings.LastIndex(tt.method, "/")+1:], func(t *testing.T) {
			for _, r := range all {
				err := p.Authorize(Identity{Name: "x", Role: r}, tt.method)
				want := false
				for _, a := range tt.roles {
					want = want || a == r
				}
				if (err == nil) != want {
					t.Errorf("%s: allowed %v, want %v (%v)", r, err == nil, want, err)
				}
			}
		})
	}
	// Every Migrate* RPC is the agent's, since agents may drive a move.
	for _, m := range pb.AgentService_ServiceDesc.Methods {
		if strings.HasPrefix(m.MethodName, "Migrate") {
			if err := p.Authorize(Identity{Name: "n1", Role: pki.RoleAgent}, "/godwit.v1.AgentService/"+m.MethodName); err != nil {
				t.Errorf("an agent may not call %s: %v", m.MethodName, err)
			}
		}
	}
	for _, m := range pb.AgentService_ServiceDesc.Streams {
		if strings.HasPrefix(m.StreamName, "Migrate") {
			if err := p.Authorize(Identity{Name: "n1", Role: pki.RoleAgent}, "/godwit.v1.AgentService/"+m.StreamName); err != nil {
				t.Errorf("an agent may not call %s: %v", m.StreamName, err)
			}
		}
	}
}

func TestDenialsSayWhatToDo(t *testing.T) {
	p := AgentPolicy()
	tests := []struct {
		name   string
		caller Identity
		method string
		is     error
		want   string
	}{
		{"a viewer runs a container", Identity{Name: "alice", Role: pki.RoleViewer}, pb.AgentService_RunContainer_FullMethodName, ErrDenied,
			`viewer "alice" cannot call RunContainer: it needs the operator or scheduler role; issue a certificate with --role operator`},
		{"an agent reads logs", Identity{Name: "n1", Role: pki.RoleAgent}, pb.AgentService_Logs_FullMethodName, ErrDenied,
			`agent "n1" cannot call Logs: it needs the viewer, operator or scheduler role; issue a certificate with --role viewer`},
		{"a viewer migrates", Identity{Name: "bob", Role: pki.RoleViewer}, pb.AgentService_MigrateDump_FullMethodName, ErrDenied,
			`viewer "bob" cannot call MigrateDump: it needs the operator, agent or scheduler role; issue a certificate with --role operator`},
		{"a method not in the policy", Identity{Name: "root", Role: pki.RoleOperator}, "/godwit.v1.AgentService/Reboot", ErrNotInPolicy,
			`operator "root" cannot call Reboot: /godwit.v1.AgentService/Reboot is not in the policy`},
		{"a plaintext caller", Identity{Name: InsecureName}, pb.AgentService_NodeInfo_FullMethodName, ErrDenied,
			`insecure cannot call NodeInfo`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Authorize(tt.caller, tt.method)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Authorize = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestMergeUnitesTheRoles(t *testing.T) {
	const m = "/godwit.v1.X/Y"
	p := Merge(NewPolicy(Grant([]pki.Role{pki.RoleViewer}, m)), NewPolicy(Operate(m)), AgentPolicy())
	for _, r := range []pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleScheduler} {
		if err := p.Authorize(Identity{Name: "x", Role: r}, m); err != nil {
			t.Errorf("merged: %v", err)
		}
	}
	if err := p.Authorize(Identity{Name: "x", Role: pki.RoleAgent}, m); err == nil {
		t.Error("merged: the agent may call a method no policy gave it")
	}
	if err := p.Authorize(Identity{Name: "x", Role: pki.RoleViewer}, pb.AgentService_Logs_FullMethodName); err != nil {
		t.Errorf("merged: the agent policy's entries are lost: %v", err)
	}
}
