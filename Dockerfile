FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN AIRLOCK_SECRET_KEY=build AIRLOCK_FIELD_ENCRYPTION_KEYS=build python manage.py collectstatic --noinput
USER nobody
