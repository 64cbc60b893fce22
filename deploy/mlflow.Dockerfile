# The MLflow tracking server's image: MLflow with its basic-auth app, the PostgreSQL driver (psycopg2) for
# the run and user databases, and boto3 for the S3 artifact store. It needs no files from the repository:
#
#   docker build -f deploy/mlflow.Dockerfile -t registry.example.com/resnet-study-mlflow:3.17.2 deploy
#
# Keep MLFLOW_VERSION at or above the MLflow that the study image installs: an older server may lack an
# endpoint the client calls.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==2.9.13" "boto3==1.44.5" \
 && groupadd --gid 1000 mlflow \
 && useradd --create-home --uid 1000 --gid 1000 mlflow

# No credentials in the image: the database password, the admin account, the Flask secret key and the S3
# keys come from Kubernetes Secrets at run time (deploy/k8s/30-mlflow.yaml).
ENV HOME=/home/mlflow \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--help"]
