"""Deployment checks: the chart, the CloudFormation template and its IAM, the Dockerfile, the Lambda package."""
