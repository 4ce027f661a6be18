account_id          = "123456789012"
home_aws_region     = "us-east-1"
replica_aws_regions = ["eu-west-1"]
