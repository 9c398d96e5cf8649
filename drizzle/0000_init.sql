CREATE TABLE "sluice"."aggregate_heads" (
	"aggregate_type" text NOT NULL,
	"aggregate_id" text NOT NULL,
	"aggregate_version" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "aggregate_heads_pkey" PRIMARY KEY("aggregate_type","aggregate_id")
);
--> statement-breakpoint
CREATE TABLE "sluice"."consumer_assignments" (
	"consumer_name" text PRIMARY KEY NOT NULL,
	"worker_id" uuid,
	"paused" boolean DEFAULT false NOT NULL,
	"state" text,
	"last_error" text,
	"state_changed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sluice"."consumer_checkpoints" (
	"consumer_name" text PRIMARY KEY NOT NULL,
	"last_position" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sluice"."consumer_gap_skips" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"consumer_name" text NOT NULL,
	"worker_id" uuid NOT NULL,
	"gap_position" bigint NOT NULL,
	"skip_to_position" bigint NOT NULL,
	"highest_visible_position" bigint NOT NULL,
	"skipped_positions" bigint[] DEFAULT '{}'::bigint[] NOT NULL,
	"reason" text NOT NULL,
	"first_seen_at" timestamp with time zone NOT NULL,
	"late_positions" bigint[] DEFAULT '{}'::bigint[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sluice"."events" (
	"global_position" bigserial PRIMARY KEY NOT NULL,
	"transaction_id" "xid8" DEFAULT pg_current_xact_id() NOT NULL,
	"aggregate_type" text NOT NULL,
	"aggregate_id" text NOT NULL,
	"aggregate_version" bigint NOT NULL,
	"event_id" uuid NOT NULL,
	"event_type" text NOT NULL,
	"event_version" integer DEFAULT 1 NOT NULL,
	"payload" jsonb NOT NULL,
	"metadata" jsonb,
	"bounded_context" text,
	"trace_id" text,
	"correlation_id" text,
	"causation_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "events_event_id_key" UNIQUE("event_id"),
	CONSTRAINT "events_aggregate_version_key" UNIQUE("aggregate_type","aggregate_id","aggregate_version")
);
--> statement-breakpoint
CREATE TABLE "sluice"."worker_nodes" (
	"worker_id" uuid PRIMARY KEY NOT NULL,
	"heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"consumers" text[] DEFAULT '{}'::text[] NOT NULL,
	"liveness_key" bigint,
	"backend_pid" integer,
	"info" jsonb DEFAULT '{}'::jsonb NOT NULL
);
--> statement-breakpoint
ALTER TABLE "sluice"."consumer_assignments" ADD CONSTRAINT "consumer_assignments_worker_fk" FOREIGN KEY ("worker_id") REFERENCES "sluice"."worker_nodes"("worker_id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "consumer_assignments_worker_idx" ON "sluice"."consumer_assignments" USING btree ("worker_id");--> statement-breakpoint
CREATE INDEX "consumer_gap_skips_consumer_idx" ON "sluice"."consumer_gap_skips" USING btree ("consumer_name","created_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "events_type_position_idx" ON "sluice"."events" USING btree ("aggregate_type","global_position");--> statement-breakpoint
CREATE INDEX "events_context_position_idx" ON "sluice"."events" USING btree ("bounded_context","global_position");--> statement-breakpoint
CREATE INDEX "worker_nodes_heartbeat_idx" ON "sluice"."worker_nodes" USING btree ("heartbeat_at");