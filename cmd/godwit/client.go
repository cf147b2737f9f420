package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// agentClient dials the agent named by --agent. The connection is lazy:
// errors show on the first call, where explain turns them into advice.
func (o *globalOptions) agentClient() (pb.AgentServiceClient, func(), error) {
	conn, err := grpc.NewClient(o.agentAddr, append(rpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return nil, nil, fmt.Errorf("agent address %q: %w", o.agentAddr, err)
	}
	return pb.NewAgentServiceClient(conn), func() { conn.Close() }, nil
}

// dataDialer opens data connections to the agent named by --agent, which
// serves them on its gRPC address: checkpoint archives travel on them.
func (o *globalOptions) dataDialer() agentclient.DataDialer {
	return agentclient.DialData(o.agentAddr)
}

// explain turns a gRPC error into the agent's own message, or advice when
// the agent could not be reached.
func (o *globalOptions) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the agent at %s (%s): is `godwit agent` running there? Set --agent or GODWIT_AGENT",
			o.agentAddr, st.Message())
	case codes.Canceled:
		return context.Canceled
	}
	return errors.New(st.Message())
}

// call runs f with a client of the agent and explains its error.
func (o *globalOptions) call(f func(pb.AgentServiceClient) error) error {
	client, closeConn, err := o.agentClient()
	if err != nil {
		return err
	}
	defer closeConn()
	return o.explain(f(client))
}
