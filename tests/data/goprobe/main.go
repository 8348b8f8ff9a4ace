// A gRPC health client built on grpc-go, the gRPC implementation of kubelet's grpc
// probes: `goprobe ADDRESS` checks the service names the gateway serves and one it does
// not; `goprobe ADDRESS watch` prints every status a Watch of "" reports until it ends.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Println("dial error:", err)
		os.Exit(2)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	if len(os.Args) > 2 && os.Args[2] == "watch" {
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
		if err != nil {
			fmt.Println("watch error:", err)
			os.Exit(1)
		}
		for {
			reply, err := stream.Recv()
			if err != nil {
				fmt.Println("end:", err)
				return
			}
			fmt.Println(reply.Status)
		}
	}
	for _, service := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor", "nope"} {
		reply, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			fmt.Printf("%s: %v\n", service, err)
			continue
		}
		fmt.Printf("%s: %v\n", service, reply.Status)
	}
}
