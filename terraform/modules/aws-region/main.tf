# One Marquee region on AWS: its gateways (an ECS service on Fargate) behind an Application
# Load Balancer that checks each gateway's /readyz, its ElastiCache Redis Cluster (cluster
# mode), and its ScyllaDB data center, named after the region as the region file's
# `[store] local_dc` is (ScyllaDB Cloud endpoints, or nodes on ScyllaDB's AMI).
#
# What the rig runs on loopback (cargo xtask rig), this runs in a region: HAProxy is the ALB,
# the Redis Cluster is ElastiCache, the CQL stand-in is ScyllaDB. Not applied by Marquee's CI
# (the AWS provider cannot be downloaded there): `terraform fmt -check` and checkov only; the
# gateways' environment comes from the provider-free gateway-environment module, whose tests
# and whose rendering through the real gateway CI does run.
#
# Each region is its own stack and state (environments/aws/region): applying or failing one
# never touches another, and traffic (Route 53, CloudFront) is the traffic stack's alone.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_vpc" "region" {
  id = var.vpc_id
}

data "aws_subnet" "private" {
  for_each = toset(var.private_subnet_ids)
  id       = each.value
}

# CloudFront reaches the load balancer from its origin-facing addresses only, and Route 53's
# health checkers probe it: both as AWS-managed prefix lists. A prefix list counts against a
# security group's rules quota by its weight (CloudFront's 55, Route 53's 25; the default
# quota is 60 inbound rules per group), so each has a group of its own.
data "aws_ec2_managed_prefix_list" "cloudfront" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

data "aws_ec2_managed_prefix_list" "route53_health_checks" {
  name = "com.amazonaws.${data.aws_region.current.region}.route53-healthchecks"
}

# The origin header CloudFront adds (current and, during a rotation, previous values).
data "aws_secretsmanager_secret_version" "origin" {
  secret_id = var.secrets.origin
}

# The Redis AUTH token ElastiCache is created with (it lands in the state: keep the state
# bucket encrypted and private).
data "aws_secretsmanager_secret_version" "redis_auth" {
  secret_id = var.secrets.redis_auth
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
  # The origin secret is JSON {"current": …, "previous": …}, both keys always present
  # ("previous" empty outside a rotation): ECS resolves both keys whenever a task starts, so a
  # key missing then would stop new tasks.
  origin        = jsondecode(data.aws_secretsmanager_secret_version.origin.secret_string)
  origin_values = [for v in [local.origin.current, local.origin.previous] : v if v != ""]
  # The cluster's nodes, named as ElastiCache names them in cluster mode
  # (<group>-<shard, 4 digits>-<node, 3 digits>): known before the cluster exists, as the
  # alarms' for_each needs (`member_clusters` is known only after apply).
  redis_nodes = toset(flatten([
    for shard in range(1, var.redis.shards + 1) : [
      for node in range(1, var.redis.replicas_per_shard + 2) : format("%s-%04d-%03d", local.name, shard, node)
    ]
  ]))
}

# What the gateways are told (settings, and secrets by reference), checked by the module the
# way the gateway itself checks it.
module "gateway_environment" {
  source = "../gateway-environment"

  region      = var.region
  listen_port = local.gateway_port
  # Only the load balancer connects; it names the client in X-Forwarded-For, which the
  # gateways believe only from requests carrying the origin secret (CloudFront's).
  trusted_proxies = [data.aws_vpc.region.cidr_block]
  store = {
    contact_points = local.scylla_contact_points
    keyspace       = var.scylla.keyspace
    replication    = var.scylla.replication
    username       = var.scylla.username
    tls            = var.scylla.tls
  }
  redis = {
    seeds = ["${aws_elasticache_replication_group.cache.configuration_endpoint_address}:6379"]
  }
  manifest_file = var.gateway.manifest_file
  secrets = {
    signing_keys           = var.secrets.signing_keys
    store_password         = "${var.secrets.store}:password::"
    store_tls_ca           = var.scylla.tls ? "${var.secrets.store}:ca::" : null
    redis_password         = var.secrets.redis_auth
    origin_secret          = "${var.secrets.origin}:current::"
    origin_secret_previous = "${var.secrets.origin}:previous::"
  }
  extra = var.gateway.environment
}

# --- Security groups -------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name        = "${local.name}-lb"
  description = "Marquee ${var.region}: the load balancer, reached by CloudFront"
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

resource "aws_security_group" "lb_health_checks" {
  name        = "${local.name}-lb-health"
  description = "Marquee ${var.region}: the load balancer, probed by Route 53 health checkers"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_from_health_checks" {
  security_group_id = aws_security_group.lb_health_checks.id
  description       = "HTTPS from Route 53 health checkers"
  prefix_list_id    = data.aws_ec2_managed_prefix_list.route53_health_checks.id
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
  description       = "HTTPS: the image registry, secrets, an identity provider's JWKS"
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

# Session Manager (operators' shell, no SSH), ScyllaDB's package repositories for upgrades and
# its version check, all over HTTPS (through the VPC's NAT or endpoints). Time comes from the
# Amazon Time Sync Service on a link-local address, which security groups do not filter.
resource "aws_vpc_security_group_egress_rule" "scylla_https" {
  count             = local.scylla_nodes > 0 ? 1 : 0
  security_group_id = aws_security_group.scylla[0].id
  description       = "HTTPS: Session Manager, ScyllaDB's repositories and version check"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# --- The load balancer -----------------------------------------------------------------

resource "aws_lb" "region" {
  #checkov:skip=CKV2_AWS_28:The web application firewall sits on the CloudFront distribution, in front of every region (modules/aws-traffic); the load balancer only admits CloudFront and health checkers.
  name                       = substr(local.name, 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.lb.id, aws_security_group.lb_health_checks.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # Above CloudFront's origin keep-alive (30 s), so the load balancer never closes a connection
  # CloudFront is about to reuse; below the gateways' `http.idle_timeout_ms` (75 s), so it is
  # the one that closes idle connections.
  idle_timeout = 60
  tags         = local.tags

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

# Trusting CloudFront's address ranges trusts every CloudFront distribution, anyone's: only
# requests carrying the origin secret (which only Marquee's distribution adds) reach a
# gateway. Everything else gets a GraphQL-shaped 403, except /readyz, which Route 53's
# health checkers (who cannot add a header) probe.
resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.region.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      message_body = jsonencode({ errors = [{ message = "Requests reach this API through its CDN.", extensions = { code = "FORBIDDEN" } }] })
      status_code  = "403"
    }
  }
}

resource "aws_lb_listener_rule" "health" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10
  tags         = local.tags

  condition {
    path_pattern {
      values = ["/readyz"]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateways.arn
  }
}

resource "aws_lb_listener_rule" "through_cdn" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 20
  tags         = local.tags

  # Current and previous values (at most 3 per condition): a rotation adds the new value
  # here first, then CloudFront sends it, then the old one is dropped.
  condition {
    http_header {
      http_header_name = "X-Marquee-Origin"
      values           = local.origin_values
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateways.arn
  }

  lifecycle {
    # An ALB compares header values case-insensitively, with * and ? as wildcards, up to 128
    # characters: a secret of lowercase hex (`openssl rand -hex 32`) is matched exactly.
    precondition {
      condition     = alltrue([for v in local.origin_values : can(regex("^[0-9a-f]{32,128}$", v))])
      error_message = "The origin secret's current and previous values must be 32-128 lowercase hex characters (openssl rand -hex 32)."
    }
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

# The execution role reads the gateways' secrets when a task starts (ECS puts them in the
# environment); the gateway itself calls no AWS API, so its task role has no policy.
data "aws_iam_policy_document" "secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = distinct(values(var.secrets))
  }
}

resource "aws_iam_role_policy" "secrets" {
  name   = "read-gateway-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets.json
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
    environment            = [for name, value in module.gateway_environment.environment : { name = name, value = value }]
    secrets                = [for name, ref in module.gateway_environment.secrets : { name = name, valueFrom = ref }]
    # SIGTERM, then this long before SIGKILL: the drain (`http.drain_delay_ms`) and the
    # requests in flight (`http.shutdown_grace_ms`) fit in it.
    stopTimeout = 30
    ulimits     = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gateway.name
        awslogs-region        = data.aws_region.current.region
        awslogs-stream-prefix = "gateway"
      }
    }
  }])
}

resource "aws_ecs_service" "gateway" {
  name            = "gateway"
  cluster         = aws_ecs_cluster.region.id
  task_definition = aws_ecs_task_definition.gateway.arn
  desired_count   = var.gateway.desired_count
  launch_type     = "FARGATE"
  # 1.4.0 or later: secrets taken from a key of a JSON secret.
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

  # The target group is attached through the listener's rules (its default action is the 403).
  depends_on = [aws_lb_listener_rule.health, aws_lb_listener_rule.through_cdn]
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

# TLS only, with an AUTH token: the gateways speak TLS (verified against public CAs, which
# issue ElastiCache's certificates) and AUTH as `default`. The token is rotated with
# `auth_token_update_strategy = "ROTATE"` (both tokens accepted until the next change).
resource "aws_elasticache_replication_group" "cache" {
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
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = data.aws_secretsmanager_secret_version.redis_auth.secret_string
  auth_token_update_strategy = "ROTATE"
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
  # ScyllaDB's image applies user data on the first boot only, and a stop/start (which a
  # user-data change would cause) wipes the instance store that holds the node's data. So a
  # later change (a new region's seeds) is never pushed to running nodes: seeds matter only
  # to a node joining, and running nodes learn new data centers by gossip. Replacing a node is
  # ScyllaDB's replace-node procedure, not an apply.
  user_data_replace_on_change = false

  lifecycle {
    ignore_changes = [ami, user_data]
  }

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
    # The image writes no cassandra-rackdc.properties on AWS: the data center is the region's
    # name and the rack the availability zone. Recent images mask the SSM agent; operators
    # reach nodes through Session Manager, so it is started.
    post_configuration_script = base64encode(join("\n", [
      "#!/bin/sh",
      "printf 'dc=%s\\nrack=%s\\nprefer_local=true\\n' '${var.region}' '${data.aws_subnet.private[var.private_subnet_ids[count.index % length(var.private_subnet_ids)]].availability_zone}' > /etc/scylla/cassandra-rackdc.properties",
      "systemctl unmask amazon-ssm-agent 2>/dev/null && systemctl enable --now amazon-ssm-agent || true",
    ]))
  })
}

# --- Alarms (to var.alarm_topic_arn) ----------------------------------------------------
# What an SRE needs to decide a failover from: the load balancer failing requests, gateways
# missing from rotation or from the service, and the Redis Cluster running hot or full. The
# region's Route 53 health check alarm lives with the traffic stack (Route 53's metrics are
# in us-east-1 only).

locals {
  alarm_actions = [var.alarm_topic_arn]
  lb_dimensions = { LoadBalancer = aws_lb.region.arn_suffix }
  tg_dimensions = { LoadBalancer = aws_lb.region.arn_suffix, TargetGroup = aws_lb_target_group.gateways.arn_suffix }
}

resource "aws_cloudwatch_metric_alarm" "lb_5xx" {
  alarm_name          = "${local.name}-lb-5xx"
  alarm_description   = "The load balancer answered 5xx itself (no healthy gateway, timeouts) more than 50 times a minute, 3 minutes running."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_ELB_5XX_Count"
  dimensions          = local.lb_dimensions
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 50
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "gateway_5xx" {
  alarm_name          = "${local.name}-gateway-5xx"
  alarm_description   = "Gateways answered 5xx (store unavailable, timeouts) more than 50 times a minute, 3 minutes running."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = local.tg_dimensions
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 50
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "healthy_gateways" {
  alarm_name          = "${local.name}-healthy-gateways"
  alarm_description   = "Fewer gateways in the load balancer's rotation than the region's minimum, 2 minutes running."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = local.tg_dimensions
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  threshold           = var.gateway.min_count
  comparison_operator = "LessThanThreshold"
  # No data is no gateway reporting: as bad as none healthy.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
  tags               = local.tags
}

resource "aws_cloudwatch_metric_alarm" "running_gateways" {
  alarm_name          = "${local.name}-running-gateways"
  alarm_description   = "Fewer gateway tasks running than the region's minimum (Container Insights), 3 minutes running."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = aws_ecs_cluster.region.name, ServiceName = aws_ecs_service.gateway.name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  threshold           = var.gateway.min_count
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# One pair per node of the Redis Cluster (its metrics are per cache cluster, i.e. node).
resource "aws_cloudwatch_metric_alarm" "redis_cpu" {
  for_each            = local.redis_nodes
  alarm_name          = "${each.value}-engine-cpu"
  alarm_description   = "A Redis node's engine thread is over 80% busy, 5 minutes running: the region's cache tier is near its limit."
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { CacheClusterId = each.value }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 5
  threshold           = 80
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  for_each            = local.redis_nodes
  alarm_name          = "${each.value}-memory"
  alarm_description   = "A Redis node uses over 90% of its memory, 5 minutes running: it is evicting (allkeys-lru) the region's hot set."
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  dimensions          = { CacheClusterId = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 90
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
