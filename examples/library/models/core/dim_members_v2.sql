select member_id, first_name, joined_on, membership from {{ ref('stg_members') }}
