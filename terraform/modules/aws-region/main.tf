# One Marquee region on AWS: its gateways (an ECS service on Fargate) behind an Application
# Load Balancer that checks each gateway's /readyz, its ElastiCache Redis Cluster (cluster
# mode), and its ScyllaDB data center, named after the region as the region file's
# `[store] local_dc` is (ScyllaDB Cloud endpoints, or nodes on ScyllaDB's AMI).
#
# What the rig runs on loopback (cargo xtask rig), this runs in a region: HAProxy is the ALB,
# the Redis Cluster is ElastiCache, the CQL stand-in is ScyllaDB. Not applied by Marquee's CI
# (the AWS provider cannot be downloaded there): `terraform fmt -check` and checkov only.

data "aws_region" "current" {}

data "aws_vpc" "region" {
  id = var.vpc_id
}

data "aws_subnet" "private" {
  for_each = toset(var.private_subnet_ids)
  id       = each.value
}

# CloudFront reaches the load balancer from its origin-facing addresses only...
data "aws_ec2_managed_prefix_list" "cloudfront" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

# ...and Route 53's health checkers probe it. Both forward the client in X-Forwarded-For:
# the gateways trust these networks and the VPC's to name the client (`http.trusted_proxies`).
data "aws_ip_ranges" "route53_health_checks" {
  services = ["route53_healthchecks"]
}

data "aws_ip_ranges" "cloudfront" {
  services = ["cloudfront"]
}

locals {
  name         = "marquee-${var.region}"
  tags         = merge(var.tags, { "marquee:region" = var.region })
  gateway_port = 8080
  scylla_nodes = var.scylla.nodes == null ? 0 : var.scylla.nodes.count
  scylla_contact_points = (
    var.scylla.nodes == null
    ? var.scylla.contact_points
    : [for eni in aws_network_interface.scylla : "${eni.private_ip}:9042"]
  )
  # What the module decides about a gateway's settings; `var.gateway.environment` adds to or
  # overrides it (e.g. MARQUEE_STORE__REPLICATION, MARQUEE_AUTH__JWKS_URL).
  gateway_environment = merge(
    {
      MARQUEE_REGION                = var.region
      MARQUEE_LISTEN                = "0.0.0.0:${local.gateway_port}"
      MARQUEE_LOG__FORMAT           = "json"
      MARQUEE_HTTP__TRUSTED_PROXIES = jsonencode(concat([data.aws_vpc.region.cidr_block], data.aws_ip_ranges.cloudfront.cidr_blocks))
      MARQUEE_STORE__BACKEND        = "scylla"
      MARQUEE_STORE__CONTACT_POINTS = jsonencode(local.scylla_contact_points)
      MARQUEE_STORE__LOCAL_DC       = var.region
      MARQUEE_REDIS__SEEDS          = jsonencode(["${aws_elasticache_replication_group.cache.configuration_endpoint_address}:6379"])
    },
    var.gateway.environment,
  )
}

# --- Security groups -------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name        = "${local.name}-lb"
  description = "Marquee ${var.region}: the load balancer, reached by CloudFront and Route 53 health checks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_from_cloudfront" {
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from CloudFront's origin-facing servers"
  prefix_list_id    = data.aws_ec2_managed_prefix_list.cloudfront.id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "lb_from_health_checks" {
  for_each          = toset(data.aws_ip_ranges.route53_health_checks.cidr_blocks)
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from Route 53 health checkers"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "lb_to_gateways" {
  security_group_id            = aws_security_group.lb.id
  description                  = "To the gateways"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
}

resource "aws_security_group" "gateway" {
  name        = "${local.name}-gateway"
  description = "Marquee ${var.region}: the gateways"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_lb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "From the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
}

resource "aws_vpc_security_group_egress_rule" "gateway_https" {
  security_group_id = aws_security_group.gateway.id
  description       = "HTTPS: the image registry, secrets, the signing keys' JWKS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "gateway_to_redis" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "To the region's Redis Cluster"
  referenced_security_group_id = aws_security_group.redis.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_egress_rule" "gateway_to_scylla" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "CQL to the region's ScyllaDB nodes (ScyllaDB Cloud: through its VPC peering)"
  cidr_ipv4                    = var.scylla.nodes == null ? "0.0.0.0/0" : null
  referenced_security_group_id = var.scylla.nodes == null ? null : aws_security_group.scylla[0].id
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9142
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "Marquee ${var.region}: the regional Redis Cluster, reached by the gateways only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_gateways" {
  security_group_id            = aws_security_group.redis.id
  description                  = "From the gateways"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_security_group" "scylla" {
  count       = local.scylla_nodes > 0 ? 1 : 0
  name        = "${local.name}-scylla"
  description = "Marquee ${var.region}: the region's ScyllaDB data center"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "scylla_from_gateways" {
  count                        = local.scylla_nodes > 0 ? 1 : 0
  security_group_id            = aws_security_group.scylla[0].id
  description                  = "CQL (9042, TLS 9142) from the gateways"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9142
}

resource "aws_vpc_security_group_ingress_rule" "scylla_internode" {
  for_each          = local.scylla_nodes > 0 ? toset(concat([data.aws_vpc.region.cidr_block], var.scylla.nodes.peer_cidrs)) : toset([])
  security_group_id = aws_security_group.scylla[0].id
  description       = "Node to node (7000, TLS 7001), this region's and the other data centers'"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 7000
  to_port           = 7001
}

resource "aws_vpc_security_group_egress_rule" "scylla_internode" {
  for_each          = local.scylla_nodes > 0 ? toset(concat([data.aws_vpc.region.cidr_block], var.scylla.nodes.peer_cidrs)) : toset([])
  security_group_id = aws_security_group.scylla[0].id
  description       = "Node to node, this region's and the other data centers'"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 7000
  to_port           = 7001
}

# --- The load balancer -----------------------------------------------------------------

resource "aws_lb" "region" {
  #checkov:skip=CKV2_AWS_28:The web application firewall sits on the CloudFront distribution, in front of every region (modules/aws-edge); the load balancer only admits CloudFront and health checkers.
  name                       = substr(local.name, 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  idle_timeout               = 60
  tags                       = local.tags

  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = local.name
    enabled = true
  }
}

# Each gateway is checked on /readyz every 5 s and taken out after two failures: a gateway
# sent SIGTERM answers /readyz with 503 for `http.drain_delay_ms` before it stops listening.
resource "aws_lb_target_group" "gateways" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the gateways listen in private subnets and admit the load balancer only.
  name                 = substr("${local.name}-gateways", 0, 32)
  port                 = local.gateway_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.drain_delay_seconds
  tags                 = local.tags

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 5
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.region.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateways.arn
  }
}

# --- The gateways ----------------------------------------------------------------------

resource "aws_ecs_cluster" "region" {
  name = local.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/marquee/${var.region}/gateway"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

data "aws_iam_policy_document" "ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Pulls the image, writes the logs and reads the gateway's secrets; the gateway itself calls
# no AWS API, so its task role has no policy.
resource "aws_iam_role" "execution" {
  name               = "${local.name}-gateway-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  count = length(var.gateway.secrets) > 0 ? 1 : 0

  statement {
    actions = ["secretsmanager:GetSecretValue", "ssm:GetParameters"]
    # A Secrets Manager reference may name a JSON key after the secret's ARN (7 fields).
    resources = distinct([for arn in values(var.gateway.secrets) : join(":", slice(split(":", arn), 0, min(7, length(split(":", arn)))))])
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "secrets" {
  count  = length(var.gateway.secrets) > 0 ? 1 : 0
  name   = "read-gateway-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets[0].json
}

resource "aws_iam_role" "task" {
  name               = "${local.name}-gateway"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks.json
  tags               = local.tags
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${local.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway.cpu
  memory                   = var.gateway.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  tags                     = local.tags

  container_definitions = jsonencode([{
    name                   = "gateway"
    image                  = var.gateway.image
    essential              = true
    command                = ["serve"]
    readonlyRootFilesystem = true
    portMappings           = [{ containerPort = local.gateway_port, protocol = "tcp" }]
    environment            = [for name, value in local.gateway_environment : { name = name, value = value }]
    secrets                = [for name, arn in var.gateway.secrets : { name = name, valueFrom = arn }]
    # SIGTERM, then this long before SIGKILL: the drain (`http.drain_delay_ms`) and the
    # requests in flight (`http.shutdown_grace_ms`) fit in it.
    stopTimeout = 30
    ulimits     = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gateway.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "gateway"
      }
    }
  }])
}

resource "aws_ecs_service" "gateway" {
  name                               = "gateway"
  cluster                            = aws_ecs_cluster.region.id
  task_definition                    = aws_ecs_task_definition.gateway.arn
  desired_count                      = var.gateway.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  tags                               = local.tags

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateways.arn
    container_name   = "gateway"
    container_port   = local.gateway_port
  }

  lifecycle {
    # The autoscaler owns the count once the service runs.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.region.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.gateway.min_count
  max_capacity       = var.gateway.max_count
}

# Scales on requests per gateway: when another region's clients arrive (a drain or a
# failover), the count follows within minutes.
resource "aws_appautoscaling_policy" "requests" {
  name               = "${local.name}-requests-per-gateway"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    # ALBRequestCountPerTarget counts a minute's requests.
    target_value       = var.gateway.target_requests_per_second * 60
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.region.arn_suffix}/${aws_lb_target_group.gateways.arn_suffix}"
    }
  }
}

# --- The Redis Cluster -----------------------------------------------------------------

resource "aws_elasticache_subnet_group" "cache" {
  name       = local.name
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

# A cache: entries evicted least recently used when memory runs out (a full cluster refuses
# writes with OOM, which the gateways count and ride out, but eviction keeps L2 useful).
resource "aws_elasticache_parameter_group" "cache" {
  name   = "${local.name}-redis7-cluster"
  family = "redis7"
  tags   = local.tags

  parameter {
    name  = "cluster-enabled"
    value = "yes"
  }
  parameter {
    name  = "maxmemory-policy"
    value = "allkeys-lru"
  }
}

resource "aws_elasticache_replication_group" "cache" {
  #checkov:skip=CKV_AWS_29:Encryption in transit needs TLS in the gateway's Redis client, which it does not have yet (README, Failing over a region); the cluster admits the gateways' security group only.
  #checkov:skip=CKV_AWS_30:Same as CKV_AWS_29.
  #checkov:skip=CKV_AWS_31:An AUTH token needs encryption in transit (CKV_AWS_29).
  replication_group_id       = local.name
  description                = "Marquee ${var.region}: L2 cache, persisted queries, rate limits, the invalidation bus"
  engine                     = "redis"
  engine_version             = var.redis.engine_version
  node_type                  = var.redis.node_type
  port                       = 6379
  parameter_group_name       = aws_elasticache_parameter_group.cache.name
  num_node_groups            = var.redis.shards
  replicas_per_node_group    = var.redis.replicas_per_shard
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.cache.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = false
  auto_minor_version_upgrade = true
  snapshot_retention_limit   = 1
  tags                       = local.tags
}

# --- ScyllaDB nodes (when not ScyllaDB Cloud) ------------------------------------------

# The nodes' addresses are fixed before the nodes exist: they are the seeds and the
# gateways' contact points.
resource "aws_network_interface" "scylla" {
  count           = local.scylla_nodes
  subnet_id       = var.private_subnet_ids[count.index % length(var.private_subnet_ids)]
  security_groups = [aws_security_group.scylla[0].id]
  tags            = merge(local.tags, { Name = "${local.name}-scylla-${count.index + 1}" })
}

locals {
  scylla_seeds = join(",", concat(
    slice([for eni in aws_network_interface.scylla : eni.private_ip], 0, min(local.scylla_nodes, 3)),
    var.scylla.nodes == null ? [] : var.scylla.nodes.remote_seeds,
  ))
}

data "aws_iam_policy_document" "ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Operators reach the nodes through Session Manager (nodetool, logs): no SSH, no bastion.
resource "aws_iam_role" "scylla" {
  count              = local.scylla_nodes > 0 ? 1 : 0
  name               = "${local.name}-scylla"
  assume_role_policy = data.aws_iam_policy_document.ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "scylla_ssm" {
  count      = local.scylla_nodes > 0 ? 1 : 0
  role       = aws_iam_role.scylla[0].name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "scylla" {
  count = local.scylla_nodes > 0 ? 1 : 0
  name  = "${local.name}-scylla"
  role  = aws_iam_role.scylla[0].name
  tags  = local.tags
}

resource "aws_instance" "scylla" {
  count                = local.scylla_nodes
  ami                  = var.scylla.nodes.ami
  instance_type        = var.scylla.nodes.instance_type
  iam_instance_profile = aws_iam_instance_profile.scylla[0].name
  ebs_optimized        = true
  monitoring           = true
  tags                 = merge(local.tags, { Name = "${local.name}-scylla-${count.index + 1}" })

  network_interface {
    network_interface_id = aws_network_interface.scylla[count.index].id
    device_index         = 0
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    encrypted   = true
    kms_key_id  = var.kms_key_arn
    volume_size = 50
  }

  # ScyllaDB's AMI reads its configuration from user data. The data center is the region's
  # name and the rack its availability zone (GossipingPropertyFileSnitch), so the keyspace's
  # NetworkTopologyStrategy and the gateways' `local_dc` name it as the region files do.
  user_data = jsonencode({
    scylla_yaml = {
      cluster_name    = var.scylla.cluster_name
      endpoint_snitch = "GossipingPropertyFileSnitch"
      authenticator   = "PasswordAuthenticator"
      authorizer      = "CassandraAuthorizer"
      seed_provider = [{
        class_name = "org.apache.cassandra.locator.SimpleSeedProvider"
        parameters = [{ seeds = local.scylla_seeds }]
      }]
    }
    start_scylla_on_first_boot = true
    post_configuration_script = base64encode(join("\n", [
      "#!/bin/sh",
      "printf 'dc=%s\\nrack=%s\\nprefer_local=true\\n' '${var.region}' '${data.aws_subnet.private[var.private_subnet_ids[count.index % length(var.private_subnet_ids)]].availability_zone}' > /etc/scylla/cassandra-rackdc.properties",
    ]))
  })
}
